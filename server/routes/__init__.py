"""One router per resource: status, predict, segment, robustness, KServe v2."""
