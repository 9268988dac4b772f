"""`llmrec serve`: the app on uvicorn, loopback by default, draining in-flight requests on SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
import sys

from llmrec.entrypoints.api.settings import ServiceSettings
from llmrec.settings import Settings


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(settings: Settings, service: ServiceSettings, access_log: bool = True) -> int:
    """Serve until SIGINT or SIGTERM. On either, uvicorn stops taking connections and gives the requests in flight
    `drain_s` seconds to finish before it closes (then the lifespan closes the stores)."""
    import uvicorn

    from llmrec.entrypoints.api.app import build_scenario, create_app
    from llmrec.scenario import load_scenario

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger = logging.getLogger("llmrec")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if not _loopback(service.host) and not service.api_keys:
        logger.warning("listening on %s with no API keys: reads are %s, writes refused", service.host,
                       "open" if service.open_reads else "refused")
    for name in service.scenarios:  # an unknown one fails here, in one line (exit 3), before anything loads
        load_scenario(name, settings.resolved_home())
    # The default scenario is built here, before uvicorn, so a bad dataset or store is one line and an exit code.
    default = build_scenario(settings, service, service.scenario)
    app = create_app(settings, service, pipeline=default.pipeline, agent=default.agent)
    host = f"[{service.host}]" if ":" in service.host else service.host
    print(f"llmrec: serving scenario {service.scenario} at http://{host}:{service.port}/ (OpenAPI: /docs); "
          "it answers once the model is loaded", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=service.host, port=service.port, access_log=access_log,
                            timeout_graceful_shutdown=service.drain_s, log_level="info", lifespan="on")
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
