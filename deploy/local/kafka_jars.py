"""The Apache Kafka broker's jars, resolved from Maven Central once and cached.

The pom in ``kafka/pom.xml`` is the one source of truth for the Kafka version: this module
reads it from there. The jars land in ``<cache_dir>/kafka-<version>/libs``, Maven's own
repository in ``<cache_dir>/m2``; a marker file written after a complete copy tells the
next ``dev up`` that nothing needs fetching.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

from deploy.local.processes import TAIL_LINES_DEFAULT, exclusive_lock
from engine.core.errors import StackError

KAFKA_FILES = Path(__file__).parent / "kafka"
POM_PATH = KAFKA_FILES / "pom.xml"
LOG4J2_PATH = KAFKA_FILES / "log4j2.properties"
MAVEN_TIMEOUT_SECONDS = 900.0
COMPLETE_MARKER = ".complete"
_POM_NAMESPACE = "{http://maven.apache.org/POM/4.0.0}"


def pom_property(name: str, pom_path: Path = POM_PATH) -> str:
    """The value of ``<properties><name>`` in the pom."""
    root = ElementTree.parse(pom_path).getroot()
    element = root.find(f"{_POM_NAMESPACE}properties/{_POM_NAMESPACE}{name}")
    if element is None or not (element.text or "").strip():
        raise StackError(f"{pom_path} has no <{name}> property")
    return (element.text or "").strip()


KAFKA_VERSION = pom_property("kafka.version")


def libs_path(cache_path: Path) -> Path:
    return cache_path / f"kafka-{KAFKA_VERSION}" / "libs"


def libs_complete(libs: Path) -> bool:
    return (libs / COMPLETE_MARKER).is_file()


def ensure_kafka_jars(cache_path: Path) -> Path:
    """Return the folder of the broker's jars, fetching them with Maven when incomplete.

    A file lock serialises two ``dev up`` started at once; the second finds the marker.
    """
    libs = libs_path(cache_path)
    if libs_complete(libs):
        return libs
    with exclusive_lock(libs.parent / "fetch.lock"):
        if not libs_complete(libs):
            _fetch(libs, cache_path / "m2")
    return libs


def _fetch(libs: Path, maven_repository: Path) -> None:
    maven = shutil.which("mvn")
    if maven is None:
        raise StackError("Maven (mvn) is not on PATH; it fetches the Kafka broker's jars")
    shutil.rmtree(libs, ignore_errors=True)
    command = [
        maven, "-B", "-q", "-f", str(POM_PATH),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
        f"-Dmaven.repo.local={maven_repository}",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"Maven did not fetch Kafka's jars in {error.timeout:.0f} s") from error
    jars = list(libs.glob("*.jar"))
    if done.returncode != 0 or not any(jar.name.startswith("kafka_") for jar in jars):
        output = "\n".join((done.stdout + done.stderr).splitlines()[-TAIL_LINES_DEFAULT:])
        raise StackError(
            f"Maven could not fetch Kafka {KAFKA_VERSION} (exit {done.returncode}):\n{output}"
        )
    (libs / COMPLETE_MARKER).write_text(f"kafka {KAFKA_VERSION}, {len(jars)} jars\n")
