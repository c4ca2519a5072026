"""`imaging serve` and `imaging worker`: the long-running processes."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from prometheus_client import start_http_server

from dicomweb.app import create_app
from imaging import app as composition
from imaging.archive import Archive
from imaging.audit.syslog import SyslogExporter, SyslogTransport
from imaging.config import Settings
from imaging.console import ConfigOpt, DataDirOpt, fail, settings
from imaging.dimse.processes import GatewayProcesses
from imaging.dimse.server import Gateway
from imaging.jobs.broker import BrokerDispatch, ping
from imaging.jobs.heartbeat import Heartbeat
from imaging.lifecycle import configure_server_process, wait_until_terminated
from imaging.metrics import use_multiprocess
from imaging.observability.health import Readiness, listener_check

app = typer.Typer()
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# BCP 195: TLS 1.2 with forward-secret AEAD suites only (TLS 1.3's suites are always on).
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS"


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    dicom_port: Annotated[int | None, typer.Option(envvar="IMAGING_DICOM_PORT")] = None,
    http_port: Annotated[int | None, typer.Option(envvar="IMAGING_HTTP_PORT")] = None,
    ae_title: Annotated[str | None, typer.Option(envvar="IMAGING_AE_TITLE")] = None,
    http_host: Annotated[str | None, typer.Option(envvar="IMAGING_HTTP_HOST")] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="development mode: HTTP without tokens, on 127.0.0.1 only")
    ] = False,
    no_http: Annotated[bool, typer.Option("--no-http", help="DIMSE gateway only")] = False,
) -> None:
    """Start the DICOM gateway, the DICOMweb API and the background workers."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    configure_server_process()
    chosen = settings(
        config,
        data_dir,
        dicom_port=dicom_port,
        http_port=http_port,
        http_host=http_host,
        ae_title=ae_title,
        dev_mode=dev or None,
    )
    try:
        bind = chosen.http_bind_host()
    except ValueError as exc:
        fail(exc)
    if chosen.dev_mode:
        logging.getLogger("imaging").warning(
            "DEVELOPMENT MODE: HTTP without tokens (every request is admin), bound to %s", bind
        )
    archive = Archive.open(chosen)
    exporter = audit_exporter(archive)
    processes = chosen.gateway_processes()
    metrics_dir = Path(tempfile.gettempdir()) / f"imaging-metrics-{os.getpid()}"
    if processes > 1:  # before any observation and before the gateway processes start
        use_multiprocess(metrics_dir)
    # The job runner first: registering triage loads its bundle (torch, MONAI: seconds of CPU under the
    # GIL), which must not compete with the first associations. The port opens once the server is ready.
    runner = composition.build_runner(archive)
    readiness = Readiness(archive, workers=True)
    heartbeat = None
    if chosen.broker_url:
        runner.publisher = BrokerDispatch(chosen.broker_url, namespace=chosen.broker_namespace)
        readiness.add("broker", lambda: _broker_ready(chosen.broker_url))
    elif chosen.workers:  # jobs run here: this process is a worker
        heartbeat = Heartbeat(archive.db, "serve", list(runner.kinds), lambda: runner.components)
    gateway = Gateway(archive)
    extra = None
    if processes > 1:
        # Our gateway accepts every connection and hands each to the least-loaded process.
        extra = GatewayProcesses(archive, processes - 1)
        port = gateway.start(dispatcher=extra.dispatcher)
        extra.start(chosen.dicom_host, port)
    else:
        port = gateway.start()
    readiness.add("dimse", listener_check(chosen.dicom_host, port))
    if chosen.workers:
        runner.start()
    if heartbeat is not None:
        heartbeat.start()
    print(f"DICOM gateway: AE title {chosen.ae_title} on {chosen.dicom_host}:{port}", flush=True)
    try:
        if no_http:
            print("HTTP disabled", flush=True)
            wait_until_terminated()
        else:
            scheme = "https" if chosen.http_tls_certfile else "http"
            print(f"DICOMweb: {scheme}://{bind}:{chosen.http_port}/dicomweb", flush=True)
            print(f"Viewer:   {scheme}://{bind}:{chosen.http_port}/viewer", flush=True)
            uvicorn.run(create_app(archive, readiness), **uvicorn_options(chosen, bind))
    except KeyboardInterrupt:
        pass
    finally:
        if exporter is not None:
            exporter.stop()
        if heartbeat is not None:
            heartbeat.stop()
        runner.stop()
        gateway.stop()
        if extra is not None:
            extra.stop()
        archive.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def uvicorn_options(settings: Settings, host: str) -> dict[str, Any]:
    """uvicorn's settings for the HTTP listener: HTTPS when a certificate is configured (TLS 1.2 or later,
    Python's default cipher suites); forwarded headers left to imaging.web, which believes them from
    `trusted_proxies` only (uvicorn's own proxy handling would trust any local client)."""
    options: dict[str, Any] = {
        "host": host,
        "port": settings.http_port,
        "log_level": "warning",
        "proxy_headers": False,
        "server_header": False,
    }
    if settings.http_tls_certfile is not None:
        options.update(
            ssl_certfile=str(settings.http_tls_certfile),
            ssl_keyfile=str(settings.http_tls_keyfile),
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
            ssl_ciphers=TLS_CIPHERS,
        )
    return options


def audit_exporter(archive: Archive) -> SyslogExporter | None:
    """The audit trail's export to the configured syslog collector, started (None when none is set)."""
    s = archive.settings
    if not s.audit_syslog_url:
        return None
    transport = SyslogTransport(
        s.audit_syslog_url,
        ca_file=s.audit_syslog_ca_file,
        certfile=s.audit_syslog_client_certfile,
        keyfile=s.audit_syslog_client_keyfile,
    )
    return SyslogExporter(
        archive.db.read,
        archive.db.write,
        transport,
        destination=s.audit_syslog_url,
        source_id=s.audit_source_id,
    ).start()


@app.command()
def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    kind: Annotated[list[str], typer.Option(help="only these job kinds (e.g. triage on a GPU node)")] = [],  # noqa: B006
    threads: Annotated[int, typer.Option(help="concurrent jobs (broker mode)")] = 2,
) -> None:
    """Run background jobs only: from the broker when `broker_url` is set (scale-out), else in process."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    configure_server_process()
    archive = Archive.open(settings(config, data_dir))
    runner = composition.build_runner(archive, kinds=kind)
    if archive.settings.metrics_port:  # this process's metrics (triage stages, what it ingests)
        start_http_server(archive.settings.metrics_port)
    heartbeat = Heartbeat(archive.db, "worker", list(runner.kinds), lambda: runner.components)
    heartbeat.start()
    dispatch = None
    if archive.settings.broker_url:
        dispatch = BrokerDispatch(archive.settings.broker_url, namespace=archive.settings.broker_namespace)
        consumer = dispatch.worker(runner, threads=threads)
        consumer.start()
    else:
        runner.start()
    print("worker running; job kinds: " + ", ".join(sorted(runner.kinds)), flush=True)
    try:
        wait_until_terminated()
    except KeyboardInterrupt:
        pass
    finally:
        heartbeat.stop()
        if dispatch is not None:
            consumer.stop()
            dispatch.close()
        else:
            runner.stop()
        archive.close()


def _broker_ready(url: str) -> dict[str, Any]:
    ping(url)
    return {"ready": True}
