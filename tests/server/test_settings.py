"""Settings: flags over env vars over defaults, validation, --help, and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import OPTIONS, Settings, build_parser, env_name, parse_settings, settings_from

ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    s = parse_settings([], environ={})
    assert (s.host, s.port, s.backend, s.max_batch, s.queue_size) == ("127.0.0.1", 8000, "onnx", 8, 64)
    assert s.store == Path("model_store") and s.api_key is None and s.providers == ()


def test_flags_win_over_env_and_env_over_defaults():
    env = {"SERVER_PORT": "9001", "SERVER_MAX_BATCH": "4", "SERVER_PROVIDERS": "cuda, cpu"}
    s = parse_settings(["--port", "9002"], environ=env)
    assert s.port == 9002 and s.max_batch == 4 and s.providers == ("cuda", "cpu")


@pytest.mark.parametrize(("argv", "env", "fragment"), [
    (["--backend", "tensorflow"], {}, "onnx, torchscript"),
    (["--max-batch", "0"], {}, "max batch 0"),
    ([], {"SERVER_PORT": "eighty"}, "SERVER_PORT='eighty' is not a valid int"),
    (["--queue-size", "-1"], {}, "queue size -1"),
    (["--api-key", ""], {}, "api key must not be empty"),
    (["--grpc-port", "8000"], {}, "differ from --port 8000"),
    (["--grpc-port", "70000"], {}, "gRPC port 70000 must be 0 (off) or lie in 1..65535"),
    (["--watch", "true", "--http-workers", "2"], {}, "it needs --http-workers 1"),
    (["--watch-interval-s", "0"], {}, "watch interval 0.0 s must be > 0"),
    (["--trace-sample-ratio", "1.5"], {}, "must lie in 0..1"),
])
def test_bad_values_name_the_setting(argv, env, fragment):
    with pytest.raises(ValueError, match=None) as info:
        parse_settings(argv, environ=env)
    assert fragment in str(info.value)


def test_public_settings_hide_the_api_key():
    public = Settings(api_key="secret").public()
    assert "api_key" not in public and public["api_key_required"] is True
    assert "secret" not in repr(Settings(api_key="secret"))


def test_help_documents_every_flag_and_env_var():
    out = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    flat = " ".join(out.split())
    for flag, (name, _, _) in OPTIONS.items():
        assert flag in flat and env_name(name) in flat


def test_cli_reports_a_missing_store_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "server", "--store", str(tmp_path / "none")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "model store folder not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_in_flight_limits_have_flags_env_vars_and_safe_defaults():
    s = parse_settings([], environ={})
    assert (s.max_inflight_bytes, s.max_inflight_pixels) == (256 * 1024 * 1024, 400_000_000)
    s = parse_settings(["--max-inflight-bytes", "30000000"], environ={"SERVER_MAX_INFLIGHT_PIXELS": "50000000"})
    assert (s.max_inflight_bytes, s.max_inflight_pixels) == (30_000_000, 50_000_000)
    assert s.public()["max_inflight_bytes"] == 30_000_000


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--max-inflight-bytes", "1000"], "--max-body-bytes"),  # below the largest upload: it could never be admitted
    (["--max-pixels", "500", "--max-inflight-pixels", "499"], "--max-pixels"),
])
def test_in_flight_limits_must_admit_the_largest_request(argv, fragment):
    with pytest.raises(ValueError) as info:
        parse_settings(argv, environ={})
    assert fragment in str(info.value) and "could never be admitted" in str(info.value)


def test_tensorrt_settings_parse_from_flags_and_environment():
    args = build_parser().parse_args(["--trt-cache-dir", "/var/cache/trt", "--trt-fp16", "yes"])
    settings = settings_from(args, {})
    assert settings.trt_cache_dir == Path("/var/cache/trt") and settings.trt_fp16 is True
    assert settings_from(None, {"SERVER_TRT_FP16": "false"}).trt_fp16 is False
    with pytest.raises(ValueError, match="SERVER_TRT_FP16='maybe' is not a valid flag"):
        settings_from(None, {"SERVER_TRT_FP16": "maybe"})


@pytest.mark.parametrize(("text", "max_batch", "gpu", "expected"), [
    ("auto", 8, True, (1, 2, 4, 8)),
    ("auto", 6, True, (1, 2, 4, 6)),
    ("auto", 1, True, (1,)),
    ("auto", 8, False, ()),
    ("off", 8, True, ()),
    ("2, 5", 8, False, (2, 5, 8)),
])
def test_batch_buckets_pad_on_a_gpu_by_default_and_always_end_at_max_batch(text, max_batch, gpu, expected):
    assert Settings(batch_buckets=text, max_batch=max_batch).bucket_sizes(gpu=gpu) == expected


@pytest.mark.parametrize("text", ["0,4", "16", "two", ""])
def test_a_malformed_bucket_list_fails_at_start_naming_it(text):
    with pytest.raises(ValueError, match=rf"batch buckets {text!r} must be auto, off or a comma list of sizes in 1..8"):
        Settings(batch_buckets=text)


def test_cudnn_search_is_checked():
    with pytest.raises(ValueError, match="cuDNN search 'FAST' must be one of HEURISTIC, EXHAUSTIVE, DEFAULT"):
        Settings(cudnn_conv_algo_search="FAST")


@pytest.mark.parametrize(("host", "key", "allow", "starts"), [
    ("127.0.0.1", None, False, True), ("::1", None, False, True), ("localhost", None, False, True),
    ("0.0.0.0", None, False, False), ("10.1.2.3", None, False, False), ("example.org", None, False, False),
    ("0.0.0.0", "k", False, True), ("0.0.0.0", None, True, True),
])
def test_a_server_reachable_from_other_machines_needs_a_key_unless_told_otherwise(host, key, allow, starts):
    if starts:
        assert Settings(host=host, api_key=key, allow_unauthenticated=allow).host == host
    else:
        with pytest.raises(ValueError, match=rf"binding {host} without an API key would serve anyone"):
            Settings(host=host, api_key=key, allow_unauthenticated=allow)
