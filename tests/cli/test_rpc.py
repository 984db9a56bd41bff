"""``--rpc HOST:PORT[,HOST:PORT]`` on run, serve, batch, bench and hw, and ``localllm rpc-server``,
with the llama.cpp build this environment has (issue 26). A build without the RPC backend says so
in one line (exit 2), one with it names the worker it cannot reach: either way never a crash (ggml-
rpc itself aborts the process on a worker it cannot reach). Real workers: benchmarks/bench_rpc.py."""

from __future__ import annotations

import socket

import pytest

from localllm.cli import main
from localllm.runtime import devices

NO_RPC = "this llama.cpp build has no RPC backend (install with packaging/gpu/install.sh rpc)"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS = [
    ["run", "hello"],
    ["serve"],
    ["batch", "in.jsonl"],
    ["bench"],
    ["hw"],
    ["fit", "model.gguf"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    "value,said",
    [
        ("127.0.0.1", "--rpc must be HOST:PORT (e.g. 127.0.0.1:50052), not 127.0.0.1"),
        ("127.0.0.1:0", "--rpc must be HOST:PORT (e.g. 127.0.0.1:50052), not 127.0.0.1:0"),
        ("127.0.0.1:65536", "not 127.0.0.1:65536"),
        ("::1:50052", "not ::1:50052"),
        ("a b:1", "not a b:1"),
        ("h:1,,h:2", "--rpc has an empty address (a comma too many?)"),
        ("h:1,h:1", "--rpc names h:1 twice"),
        (",".join(f"h:{p}" for p in range(1, 18)), "--rpc names 17 workers; ggml-rpc takes at most 16"),
    ],
)
def test_a_bad_worker_list_is_one_line_before_anything_loads(command, value, said, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "hi"}\n')
    assert main([*command, "--rpc", value]) == 2
    line = error_line(capsys)
    assert line.startswith("localllm: error: ") and said in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_workers_asked_of_this_build(command, capsys, tmp_path, monkeypatch):
    """No RPC backend: the one line naming the install command. With one: the worker that is not there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "hi"}\n')
    port = closed_port()
    code = main([*command, "--rpc", f"127.0.0.1:{port}"])
    line = error_line(capsys)
    if devices.supports_rpc():
        assert code == 1
        assert line.startswith(f"localllm: error: cannot reach an RPC worker at 127.0.0.1:{port}: ")
        assert "localllm rpc-server --host HOST --port PORT" in line
    else:
        assert code == 2 and line == f"localllm: error: {NO_RPC}"


def test_rpc_server_on_this_build(capsys):
    """Without the RPC backend: the one line. With it: a port already in use is one line too."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = main(["rpc-server", "--port", str(port)])
    out = capsys.readouterr()
    line = out.err.strip().splitlines()[-1]
    assert "warning" not in out.err  # 127.0.0.1 is this machine only
    if devices.supports_rpc():
        assert code == 1 and line.startswith(f"localllm: error: cannot listen on 127.0.0.1:{port}: ")
    else:
        assert code == 2 and line == f"localllm: error: {NO_RPC}"


def test_rpc_server_beyond_this_machine_warns_that_ggml_rpc_has_no_authentication(capsys):
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        code = main(["rpc-server", "--host", "0.0.0.0", "--port", str(port)])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert f"warning: ggml-rpc has no authentication: anyone who can reach 0.0.0.0:{port}" in err


@pytest.mark.parametrize(
    "args,said",
    [
        (["--port", "0"], "--port must be from 1 to 65535, not 0"),
        (["--port", "70000"], "--port must be from 1 to 65535, not 70000"),
        (["--host", "not a host"], "--host/--port must be HOST:PORT"),
        (["--threads", "0"], "--threads must be a whole number from 1 to 512, not 0"),
    ],
)
def test_rpc_server_refuses_a_bad_address_in_one_line(args, said, capsys):
    assert main(["rpc-server", *args]) == 2
    assert said in error_line(capsys)


def test_the_flag_is_in_the_help_of_each_command(capsys):
    for command in ("run", "serve", "batch", "bench", "hw", "fit"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # as wrapped for any terminal width
        assert "--rpc HOST:PORT[,HOST:PORT]" in out and "ggml-rpc has no authentication" in out
