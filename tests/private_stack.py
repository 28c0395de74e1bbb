"""Services of a test's own, to stop, kill, freeze and slow down without disturbing the
services every other test shares. They run the devstack's own Kafka jars and FerretDB
binary (`make services` installs both) on free ports, with their data in the test's folder.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support import Services, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / ".devstack"
_spec = importlib.util.spec_from_file_location("health", ROOT / "devstack/health.py")
assert _spec is not None and _spec.loader is not None
health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server process, restartable on the same port and data."""

    def __init__(self, name: str, argv: list[str], folder: Path) -> None:
        self.name, self.argv, self.log = name, argv, folder / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        self.wait_ready(120)

    def wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class PrivateMongo(Server):
    """A FerretDB of the test's own."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        data = folder / "ferretdb"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            str(DEV / "bin/ferretdb"),
            f"--listen-addr=127.0.0.1:{self.port}",
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--state-dir={data}",
            "--telemetry=disable",
            "--debug-addr=-",
            "--log-level=WARN",
        ]
        super().__init__("ferretdb", argv, folder)
        self.uri = f"mongodb://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        wait_until(lambda: health.mongo_ready(self.uri) is None, timeout, "FerretDB to answer")


class PrivateKafka(Server):
    """A one-node KRaft broker of the test's own. `slow_port`: a second listener that
    advertises `proxy_port`, so clients bootstrapped through a proxy stay behind it."""

    def __init__(self, folder: Path, proxy_port: int | None = None) -> None:
        self.port, controller = free_port(), free_port()
        folder = folder / "kafka"
        folder.mkdir(parents=True, exist_ok=True)
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{controller}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if proxy_port is not None:
            self.slow_port = free_port()
            listeners.append(f"SLOW://127.0.0.1:{self.slow_port}")
            advertised.append(f"SLOW://127.0.0.1:{proxy_port}")
            protocols += ",SLOW:PLAINTEXT"
        config = folder / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners={','.join(listeners)}",
                    f"advertised.listeners={','.join(advertised)}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"listener.security.protocol.map={protocols}",
                    f"log.dirs={folder / 'data'}",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=2",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=2",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "group.min.session.timeout.ms=1000",
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                ]
            )
        )
        # The broker's own log (coordinators at INFO) beside the test's, for a failure's story.
        log4j = folder / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "rootLogger.level=WARN",
                    "rootLogger.appenderRef.file.ref=file",
                    "appender.file.type=File",
                    "appender.file.name=file",
                    f"appender.file.fileName={folder / 'server.log'}",
                    "appender.file.layout.type=PatternLayout",
                    "appender.file.layout.pattern=[%d] %p %m (%c)%n",
                    "logger.kafka.name=kafka",
                    "logger.kafka.level=INFO",
                    "logger.coordinator.name=org.apache.kafka.coordinator",
                    "logger.coordinator.level=INFO",
                ]
            )
        )
        java = [
            "java",
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{DEV}/kafka/lib/*",
        ]
        format_ = ["kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22]]
        subprocess.run(
            [*java, *format_, "-c", str(config)], check=True, capture_output=True, timeout=120
        )
        super().__init__("kafka", [*java, "kafka.Kafka", str(config)], folder)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        wait_until(lambda: health.kafka_ready(self.bootstrap) is None, timeout, "Kafka to answer")


class LatencyProxy:
    """A TCP proxy on loopback that holds each chunk the server sends for `delay` seconds."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target, self.port = target, port or free_port()
        self.delay = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            # Close every connection and the loop itself: a loop or socket left for the
            # garbage collector is reported as a warning in whichever test runs then.
            server.close()
            for writer in self._writers:  # the pipes then read EOF and end
                writer.close()
            pending = asyncio.all_tasks(self._loop)
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(asyncio.sleep(0.1))  # transports finish closing
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, slow=False),
            self._pipe(up_reader, writer, slow=True),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if slow and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class SlowStack:
    """Private servers and the latency proxies in front of them."""

    kafka: PrivateKafka
    mongo: PrivateMongo
    kafka_proxy: LatencyProxy
    mongo_proxy: LatencyProxy

    @property
    def direct(self) -> Services:
        """For the test's own clients: no added latency."""
        return Services(self.kafka.bootstrap, self.mongo.uri)

    @property
    def proxied(self) -> Services:
        """For the worker: every byte through the proxies."""
        return Services(
            f"127.0.0.1:{self.kafka_proxy.port}", f"mongodb://127.0.0.1:{self.mongo_proxy.port}"
        )
