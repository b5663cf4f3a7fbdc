"""The pool's defaults and the option checks, without starting Ray (a stand-in for the two calls used)."""

from __future__ import annotations

import pytest

from frugalvl.distributed.cluster import Pool, plan_pool
from frugalvl.errors import UserError


class _FakeRay:
    def __init__(self, gpus: float = 0, nodes: int = 1):
        self.gpus, self.n = gpus, nodes

    def cluster_resources(self) -> dict:
        return {"CPU": 16.0 * self.n, **({"GPU": self.gpus} if self.gpus else {})}

    def nodes(self) -> list[dict]:
        return [{"Alive": True}] * self.n + [{"Alive": False}]


@pytest.mark.parametrize(
    "gpus, nodes, workers, gpw, device, expected",
    [
        (0, 3, None, None, "cpu", Pool(3, 0.0)),  # CPU cluster: one actor per live node
        (8, 2, None, None, "cuda", Pool(8, 1.0)),  # one actor per GPU
        (8, 2, None, 0.5, "cuda", Pool(16, 0.5)),  # two actors share a GPU
        (8, 2, None, None, "cpu", Pool(2, 0.0)),  # --device cpu keeps the GPUs free
        (4, 1, 2, None, "auto", Pool(2, 1.0)),  # --workers wins
    ],
)
def test_pool_defaults(gpus, nodes, workers, gpw, device, expected):
    assert plan_pool(_FakeRay(gpus, nodes), workers, gpw, device) == expected


def test_more_gpus_per_worker_than_the_cluster_has_is_one_line():
    from frugalvl.commands.segment import cli_message

    with pytest.raises(UserError, match=r"gpus_per_worker=2, but the Ray cluster has 1 GPU") as info:
        plan_pool(_FakeRay(1), None, 2.0, "cuda")
    assert cli_message(str(info.value)) == (  # what `segment --engine ray` prints
        "--gpus-per-worker 2, but the Ray cluster has 1 GPU(s): give --gpus-per-worker 0 to run on CPUs, "
        "or join a cluster with GPUs (--ray-address)"
    )


def test_engine_options_parse_and_refuse_zero_workers(capsys):
    from frugalvl.cli import build_parser

    argv = [
        "segment",
        "a.png",
        "-o",
        "out",
        "--engine",
        "ray",
        "--workers",
        "2",
        "--gpus-per-worker",
        "0.5",
        "--ray-address",
        "auto",
    ]
    args = build_parser(argv).parse_args(argv)
    assert (args.engine, args.ray_workers, args.gpus_per_worker, args.ray_address) == ("ray", 2, 0.5, "auto")
    with pytest.raises(SystemExit):
        build_parser(argv).parse_args(["segment", "a.png", "-o", "out", "--engine", "ray", "--workers", "0"])
    assert "not a positive number of workers" in capsys.readouterr().err
    argv = ["select", "features", "-w", "work", "--workers", "3", "--engine", "ray", "--ray-workers", "4"]
    args = build_parser(argv).parse_args(argv)
    from frugalvl.commands.select import feature_settings

    assert (feature_settings(args).workers, args.ray_workers) == (3, 4)  # image decoders vs Ray actors


def test_engine_ray_without_ray_installed_is_one_line(monkeypatch):
    import sys

    from frugalvl.distributed.cluster import ray_session

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'frugalvl\[ray\]'") as info:
        with ray_session(None):
            pass
    from frugalvl.commands.segment import cli_message

    assert cli_message(str(info.value)) == "--engine ray needs Ray: pip install 'frugalvl[ray]' (or use --engine local)"
