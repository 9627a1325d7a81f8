"""Flags, environment variables and defaults of the chat app (freeret_rag/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from freeret_rag.config import (CPU_DEFAULT_MODEL, ConfigError, apply_privacy_env, parse_auth, parse_config,
                                parse_size)


def test_defaults_are_private_and_local(tmp_path):
    config = parse_config([], {"HOME": str(tmp_path)})
    assert config.host == "127.0.0.1"
    assert config.port == 7860
    assert config.share is False
    assert config.auth == []
    assert config.chroma_url is None
    assert config.model == ""  # resolved to a hub id by the app (GPU or CPU default)
    assert config.max_upload_bytes == 200 * 1024**2
    assert config.rerank is True and config.top_k == 20 and config.rerank_k == 10 and config.n_sources == 3


def test_environment_then_flags_win(tmp_path):
    env = {"FREERET_MODEL": "org/model", "FREERET_DATA_DIR": str(tmp_path / "d"), "FREERET_PORT": "9000",
           "FREERET_HOST": "0.0.0.0", "FREERET_CHROMA_URL": "http://chroma:8000", "FREERET_SHARE": "true",
           "FREERET_RERANK": "no", "FREERET_TOP_K": "7", "FREERET_MAX_UPLOAD": "1.5gb", "FREERET_AUTH": "ann:pw"}
    config = parse_config([], env)
    assert config.model == "org/model"
    assert config.data_dir == tmp_path / "d"
    assert (config.port, config.host, config.share, config.rerank, config.top_k) == (9000, "0.0.0.0", True, False, 7)
    assert config.chroma_url == "http://chroma:8000"
    assert config.max_upload_bytes == int(1.5 * 1024**3)
    assert config.auth == [("ann", "pw")]
    config = parse_config(["--model", "/models/x", "--port", "7000", "--no-share", "--rerank", "--top-k", "3"], env)
    assert (config.model, config.port, config.share, config.rerank, config.top_k) == ("/models/x", 7000, False, True, 3)


def test_gradio_server_variables_are_honoured_for_spaces():
    config = parse_config([], {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861",
                               "FREERET_AUTH": "ann:pw"})
    assert (config.host, config.port) == ("0.0.0.0", 7861)


@pytest.mark.parametrize("argv,env", [(["--host", "0.0.0.0"], {}), ([], {"FREERET_HOST": "192.168.1.20"}),
                                      (["--share"], {}), ([], {"GRADIO_SERVER_NAME": "0.0.0.0"}),
                                      (["--host", "my-server.lan"], {})])
def test_serving_beyond_this_machine_needs_a_login_or_an_explicit_opt_out(argv, env):
    with pytest.raises(ConfigError, match="without a login") as refused:
        parse_config(argv, env)
    assert "FREERET_AUTH" in str(refused.value) and "FREERET_ALLOW_NO_LOGIN" in str(refused.value)
    assert parse_config([*argv, "--auth", "ann:pw"], env).auth == [("ann", "pw")]
    assert parse_config([*argv, "--allow-no-login"], env).allow_no_login is True
    assert parse_config(argv, {**env, "FREERET_ALLOW_NO_LOGIN": "1"}).allow_no_login is True


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_this_machine_only_needs_no_login(host):
    assert parse_config(["--host", host], {}).auth == []


def test_auth_inline_and_file(tmp_path):
    assert parse_auth("a:1,b:two:colons") == [("a", "1"), ("b", "two:colons")]
    users = tmp_path / "users.txt"
    users.write_text("# team\nann:secret\n\nbob:hunter2\n")
    assert parse_auth(str(users)) == [("ann", "secret"), ("bob", "hunter2")]
    assert parse_config(["--auth", str(users)], {}).auth == [("ann", "secret"), ("bob", "hunter2")]
    with pytest.raises(ConfigError, match="neither"):
        parse_auth(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("nopassword\n")
    with pytest.raises(ConfigError, match="user:password"):
        parse_auth(str(bad))


@pytest.mark.parametrize("text,expected", [("200mb", 200 * 1024**2), ("2 GB", 2 * 1024**3), ("500k", 500 * 1024),
                                           ("1048576", 1048576), ("10MiB", 10 * 1024**2)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("argv,message", [(["--max-upload", "lots"], "cannot read"), (["--port", "0"], "port"),
                                          (["--top-k", "0"], "top-k"), (["--min-relevance", "2"], "probability"),
                                          (["--chroma-url", "chroma:8000"], "http")])
def test_bad_values_say_what_is_wrong(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, {})


def test_privacy_environment_is_set_without_overriding():
    env = {"DO_NOT_TRACK": "0"}
    apply_privacy_env(env)
    assert env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["ANONYMIZED_TELEMETRY"] == "False"
    assert env["DO_NOT_TRACK"] == "0"


def test_default_model_on_this_cpu_machine():
    from freeret_rag.config import default_model

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the GPU default applies")
    assert default_model() == CPU_DEFAULT_MODEL


def test_help_lists_every_environment_variable(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--help"], {})
    text = capsys.readouterr().out
    for name in ("FREERET_MODEL", "FREERET_DATA_DIR", "FREERET_CHROMA_URL", "FREERET_HOST", "FREERET_PORT",
                 "FREERET_AUTH", "FREERET_MAX_UPLOAD", "FREERET_SHARE"):
        assert name in text
