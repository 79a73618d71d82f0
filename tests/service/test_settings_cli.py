"""Settings from the environment, validated at construction; `dopplergen serve` flags override them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.cli import run, settings_from_args
from service.settings import DEFAULT_PIPELINE, Settings
from training.cli import build_parser


def test_defaults_and_cpu_resolution():
    s = Settings()
    assert DEFAULT_PIPELINE.parts[-2:] == ("checkpoints", "demo") and s.pipeline == DEFAULT_PIPELINE
    assert (s.max_batch_size, s.api_key, s.port) == (16, None, 8000)
    assert s.resolved_device() in ("cpu", "cuda")
    assert s.resolved_dtype("cpu") == "fp32" and s.resolved_dtype("cuda") == "fp16"
    assert s.resolved_padding("cpu") == "buckets" and s.resolved_padding("cuda") == "buckets"
    assert Settings(batch_padding="fixed").resolved_padding("cpu") == "fixed"
    assert s.resolved_compile("cpu") is False and s.resolved_compile("cuda") is True
    assert Settings(compile="off").resolved_compile("cuda") is False
    assert s.resolved_max_wait_ms("cpu") == 0 and s.resolved_max_wait_ms("cuda") == 0
    assert Settings(max_wait_ms=20).resolved_max_wait_ms("cpu") == 20


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("DOPPLERGEN_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("DOPPLERGEN_API_KEY", "tok-9f2b")
    monkeypatch.setenv("DOPPLERGEN_BATCH_PADDING", "none")
    monkeypatch.setenv("DOPPLERGEN_LOG_LEVEL", "DEBUG")
    s = Settings()
    assert s.max_batch_size == 4 and s.api_key.get_secret_value() == "tok-9f2b"
    assert s.batch_padding == "none" and s.log_level == "debug"
    assert "tok-9f2b" not in repr(s)  # the key never shows in logs or tracebacks
    monkeypatch.setenv("DOPPLERGEN_API_KEY", "")  # how docker-compose passes an unset variable
    monkeypatch.setenv("DOPPLERGEN_MAX_WAIT_MS", "")
    assert Settings().api_key is None and Settings().max_wait_ms is None


@pytest.mark.parametrize(
    "bad",
    [
        {"max_batch_size": 0}, {"max_wait_ms": -1}, {"max_queue": 0}, {"request_timeout_s": 0},
        {"device": "tpu"}, {"dtype": "fp8"}, {"batch_padding": "some"}, {"port": 70000},
        {"max_samples_per_request": 300, "max_queue": 200},
    ],
)
def test_bad_knobs_fail_at_construction(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        Settings(dtype="fp16").resolved_dtype("cpu")


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("DOPPLERGEN_PORT", "9000")
    monkeypatch.setenv("DOPPLERGEN_MAX_WAIT_MS", "20")
    argv = [
        "serve", "--port", "9100", "--pipeline", "/x/p", "--max-batch-size", "8", "--batch-padding", "none",
        "--no-warmup",
    ]
    s = settings_from_args(build_parser(argv).parse_args(argv))
    assert (s.port, str(s.pipeline), s.max_batch_size, s.batch_padding, s.warmup) == (
        9100, "/x/p", 8, "none", False
    )
    assert s.max_wait_ms == 20  # not given as a flag: the environment wins over the default


def test_serve_refuses_a_missing_pipeline_or_bad_flag_with_a_message(tmp_path, capsys):
    argv = ["serve", "--pipeline", str(tmp_path / "nope")]
    assert run(build_parser(argv).parse_args(argv)) == 2
    assert "no pipeline folder" in capsys.readouterr().err
    argv = ["serve", "--max-batch-size", "0"]
    assert run(build_parser(argv).parse_args(argv)) == 2
    assert "max_batch_size" in capsys.readouterr().err


def test_serve_exits_1_when_the_pipeline_fails_to_load(tmp_path):
    from service.app import create_app
    from service.cli import serve

    # passes the CLI's check, fails loading
    (tmp_path / "dopplergen.json").write_text('{"format_version": 999}')
    app = create_app(Settings(pipeline=tmp_path, device="cpu", port=0, log_level="warning"))
    assert serve(app, access_log=False) == 1
    assert "format_version" in app.state.service.failure


def test_users_are_kept_in_a_folder_per_pipeline_by_default(tmp_path, monkeypatch):
    from service.settings import default_users_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    a, b = Settings(pipeline=tmp_path / "a" / "demo"), Settings(pipeline=tmp_path / "b" / "demo")
    assert a.users_dir is None and a.resolved_users_dir() == default_users_dir(a.pipeline)
    assert a.resolved_users_dir().parent == tmp_path / "xdg" / "dopplergen" / "users"
    assert a.resolved_users_dir().name.startswith("demo-")
    assert a.resolved_users_dir() != b.resolved_users_dir(), "two pipelines must never share people"
    same = Settings(pipeline=tmp_path / "a" / "x" / ".." / "demo")  # keyed by the resolved path
    assert same.resolved_users_dir() == a.resolved_users_dir()
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG rule: only an absolute path counts
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert a.resolved_users_dir().parent == tmp_path / "home" / ".local" / "share" / "dopplergen" / "users"


def test_users_dir_override_and_memory_only(tmp_path, monkeypatch):
    monkeypatch.setenv("DOPPLERGEN_USERS_DIR", str(tmp_path / "people"))
    assert Settings().resolved_users_dir() == tmp_path / "people"
    for none in ("none", "None", " NONE "):
        monkeypatch.setenv("DOPPLERGEN_USERS_DIR", none)
        assert Settings().users_dir == "none" and Settings().resolved_users_dir() is None
    monkeypatch.setenv("DOPPLERGEN_USERS_DIR", "")  # how docker-compose passes an unset variable: the default
    assert Settings().users_dir is None and Settings().resolved_users_dir() is not None
    monkeypatch.setenv("DOPPLERGEN_USERS_DIR", str(tmp_path / "people"))
    argv = ["serve", "--no-users-dir"]
    assert settings_from_args(build_parser(argv).parse_args(argv)).resolved_users_dir() is None
    argv = ["serve", "--users-dir", str(tmp_path / "other")]
    assert settings_from_args(build_parser(argv).parse_args(argv)).users_dir == tmp_path / "other"


def test_a_users_dir_that_is_a_file_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "users.txt"
    afile.write_text("not a folder")
    monkeypatch.setenv("DOPPLERGEN_USERS_DIR", str(afile))
    with pytest.raises(ValidationError, match="users_dir.*users.txt.*is a file"):
        Settings()
    argv = ["serve"]
    assert run(build_parser(argv).parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and str(afile) in err and "is a file" in err
    monkeypatch.delenv("DOPPLERGEN_USERS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the default's place taken by a file
    default = Settings(pipeline=tmp_path / "p").resolved_users_dir()
    default.parent.mkdir(parents=True)
    default.write_text("")
    with pytest.raises(ValueError, match=f"{default} is a file"):
        Settings(pipeline=tmp_path / "p").resolved_users_dir()
