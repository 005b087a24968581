"""What every stage shares: label conventions, image preparation, scores from logits, label PNGs and the readers of
each dataset layout. Imports nothing else of the project, so that any stage, the server included, can use it."""
