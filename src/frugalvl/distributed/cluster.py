"""Connecting to Ray: a local cluster, an existing one (``auto``, ``ray://``, ``HOST:PORT``), and the actor pool.

``ray.init`` is called only when no Ray session exists in this process (a test or a notebook may have
started one); a session started here is shut down when the job ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

log = logging.getLogger(__name__)

RAY_START_HEAD = " ".join(("ray", "start", "--head"))  # Ray's own command that starts a cluster here


def import_ray() -> Any:
    """Ray, or one line naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("engine='ray' needs Ray: pip install 'frugalvl[ray]' (or use engine='local')") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """A connected Ray: the session already open in this process, else ``ray.init(address)``.

    ``address`` None starts a local cluster (or joins the one ``RAY_ADDRESS`` names); ``auto`` joins
    the cluster started on this machine by ``ray start --head``; ``ray://HOST:10001`` uses Ray Client.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            include_dashboard=False if address is None else None,
            configure_logging=True,
            log_to_driver=True,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local cluster"
        raise UserError(
            f"cannot connect to Ray at {where} ({str(exc).splitlines()[0][:120]}): check ray_address, "
            f"or start one with `{RAY_START_HEAD}`"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Pool:
    """How many actors, and what each one holds."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float = 1.0
    restarts: int = 3  # a dead actor is restarted, and its row retried, this many times (-1: forever)


def plan_pool(
    ray: Any, workers: int | None, gpus_per_worker: float | None, device: str = "cpu", restarts: int = 3
) -> Pool:
    """Defaults: one GPU per worker when ``device`` asks for CUDA and the cluster has GPUs; as many
    workers as the GPUs allow, else one per node."""
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus and (device.startswith("cuda") or device == "auto") else 0.0
    if gpus_per_worker < 0 or (workers is not None and workers < 1):
        raise UserError("the number of workers must be at least 1 and gpus_per_worker at least 0")
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise UserError(
            f"gpus_per_worker={gpus_per_worker:g}, but the Ray cluster has {gpus:g} GPU(s): "
            "give gpus_per_worker=0 to run on CPUs, or join a cluster with GPUs (ray_address)"
        )
    if workers is None:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        workers = int(gpus // gpus_per_worker) if gpus_per_worker else max(1, nodes)
    return Pool(max(1, workers), gpus_per_worker, restarts=restarts)


def quiet_ray_data(ray: Any) -> None:
    """No Ray Data progress bars or per-dataset INFO lines (the commands draw their own bar)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def map_with_pool(ray: Any, items: list[dict], actor: type, args: tuple, pool: Pool) -> Iterator[dict]:
    """Rows of ``ray.data.from_items(items).map_batches(actor)`` on an actor pool, as they finish.

    One row per batch (``batch_size=1``): an actor loads its model once and then takes rows until
    the dataset is exhausted; Ray restarts an actor that dies and retries its row (``pool.restarts``
    times; then the dataset stops, and what was written is resumed by the next run).
    """
    if not items:
        return iter(())
    quiet_ray_data(ray)
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 200))
    kwargs = dict(
        fn_constructor_args=args,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=pool.workers),
        num_gpus=pool.gpus_per_worker or None,
        num_cpus=pool.cpus_per_worker,
        batch_format="numpy",
    )
    retries = {} if pool.restarts < 0 else {"max_restarts": pool.restarts, "max_task_retries": pool.restarts}
    try:
        with warnings.catch_warnings():  # Ray Data's default is to restart and retry forever
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            ds = ds.map_batches(actor, **kwargs, **retries)
    except TypeError:  # a Ray that no longer takes them: its own default (restart and retry)
        ds = ds.map_batches(actor, **kwargs)
    return ds.iter_rows()


def remote_call(ray: Any, fn: Callable, *args: Any, num_gpus: float = 0.0, num_cpus: float = 1.0) -> Any:
    """``fn(*args)`` as one Ray task; a :class:`UserError` raised there is raised here as itself."""
    task = ray.remote(num_gpus=num_gpus or None, num_cpus=num_cpus, max_retries=1)(fn)
    return get_or_raise(ray, task.remote(*args))


def get_or_raise(ray: Any, ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise UserError(str(cause.args[0]) if cause.args else str(cause)) from None
        raise
