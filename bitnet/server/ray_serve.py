"""Scale-out: the same app as a Ray Serve deployment with several replicas (docs/serving.md).

Each replica builds the FastAPI app in its own process (Ray's deferred ingress, so nothing with
threads or locks has to be pickled) and loads the model there; Ray's proxy spreads requests.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bitnet.server.app import ServerSettings


def build_app(model: str | None, device: str | None, threads: int | None,
              ternarize: bool, n_ctx: int | None, settings: dict[str, Any],
              activation: str | None = None) -> Any:
    """Runs inside each replica: the ASGI app over a freshly loaded model."""
    import bitnet
    from bitnet.server.app import create_app

    def load() -> Any:
        return bitnet.load(model, device=device, threads=threads, ternarize=ternarize,
                           n_ctx=n_ctx, progress=False, activation=activation)

    return create_app(load, ServerSettings(**settings))


class BitnetReplica:
    """One Ray Serve replica: keeps its settings, builds its app when Ray asks for it."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __serve_build_asgi_app__(self) -> Any:
        return build_app(*self.args)


def deployment(model: str | None, device: str | None, threads: int | None, ternarize: bool,
               n_ctx: int | None, settings: ServerSettings, replicas: int,
               min_replicas: int | None = None, max_replicas: int | None = None,
               cpus_per_replica: float = 1.0, activation: str | None = None) -> Any:
    """A bound Ray Serve application: fixed ``replicas``, or autoscaling between the bounds."""
    from ray import serve

    options: dict[str, Any] = {"name": "bitnet",
                               "ray_actor_options": {"num_cpus": cpus_per_replica}}
    if min_replicas is not None or max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": min_replicas if min_replicas is not None else 1,
            "max_replicas": max_replicas if max_replicas is not None else replicas,
            "initial_replicas": replicas,
            "target_ongoing_requests": settings.max_batch,
        }
    else:
        options["num_replicas"] = replicas
    options["max_ongoing_requests"] = settings.max_batch + settings.max_waiting
    replica = serve.deployment(serve.ingress()(BitnetReplica), **options)
    return replica.bind(model, device, threads, ternarize, n_ctx, asdict(settings), activation)


def run(app: Any, host: str, port: int, address: str | None = None) -> None:
    """Start (or join) a Ray cluster, serve ``app`` on host:port, return when it is deployed."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="bitnet", route_prefix="/", blocking=False)


def shutdown() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
