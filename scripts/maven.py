"""Fetch Java artifacts from Maven Central once and cache them under ``.tools/``.

One mechanism for every JVM part the tests, demos and benchmarks run (Hadoop's mini clusters,
DistCp, Kafka): a named bundle is a list of Maven coordinates; the first call resolves them
with their dependencies through ``mvn dependency:copy-dependencies`` into
``.tools/java/<bundle>/lib`` (local repository ``.tools/m2``), and later calls download nothing.

    python -m scripts.maven fetch hadoop     # prints the classpath
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"

HADOOP_VERSION = "3.5.0"
KAFKA_VERSION = "4.4.0"

BUNDLES: dict[str, list[str]] = {
    # A real HDFS (MiniDFSCluster, WebHDFS), MiniYARNCluster, the Hadoop client and DistCp.
    "hadoop": [
        f"org.apache.hadoop:hadoop-client-minicluster:{HADOOP_VERSION}",
        f"org.apache.hadoop:hadoop-client-api:{HADOOP_VERSION}",
        f"org.apache.hadoop:hadoop-client-runtime:{HADOOP_VERSION}",
        f"org.apache.hadoop:hadoop-distcp:{HADOOP_VERSION}",
        # DistCp links the unshaded commons-cli and commons-lang3 (hadoop-common's, "provided"
        # in its pom: the shaded client jars relocate them) and logs its counters via slf4j.
        "commons-cli:commons-cli:1.9.0",
        "org.apache.commons:commons-lang3:3.18.0",
        "org.slf4j:slf4j-reload4j:1.7.36",
    ],
    # A real Kafka broker (KRaft) and its clients. The broker logs through SLF4J: without a
    # binding (Maven resolves slf4j-api 1.7 and none) it logs nothing, so the launcher could not
    # say why a start failed; SLF4J 2 + its Log4j 2 binding send the logs to log4j-core.
    "kafka": [
        f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
        f"org.apache.kafka:kafka-server:{KAFKA_VERSION}",
        f"org.apache.kafka:kafka-clients:{KAFKA_VERSION}",
        "org.slf4j:slf4j-api:2.0.17",
        "org.apache.logging.log4j:log4j-slf4j2-impl:2.25.5",
    ],
}


class MavenError(RuntimeError):
    """The artifacts could not be fetched (no mvn, or the registry refused them)."""


def _pom(bundle: str, coords: list[str]) -> str:
    deps = []
    for c in coords:
        group, artifact, version = c.split(":")
        deps.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>replicator.tools</groupId><artifactId>{bundle}</artifactId><version>1</version>"
        f"<dependencies>{''.join(deps)}</dependencies></project>\n"
    )


def repo_dir() -> Path:
    """The local Maven repository (``REPLICATOR_MAVEN_REPO`` overrides ``.tools/m2``)."""
    return Path(os.environ.get("REPLICATOR_MAVEN_REPO") or TOOLS / "m2")


def fetch(bundle: str, quiet: bool = True) -> list[Path]:
    """Return the jars of ``bundle``, fetching them on first use."""
    coords = BUNDLES[bundle]
    digest = hashlib.sha1("\n".join(coords).encode()).hexdigest()[:12]
    home = TOOLS / "java" / bundle
    lib = home / "lib"
    stamp = home / f".fetched-{digest}"
    if not stamp.exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise MavenError("mvn not found: install Maven (Debian package 'maven') and Java 17")
        if lib.exists():
            shutil.rmtree(lib)
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(_pom(bundle, coords))
        print(f"maven: fetching {bundle} ({', '.join(coords)}) into {lib}", file=sys.stderr)
        cmd = [
            mvn, "-B", "-f", str(home / "pom.xml"), f"-Dmaven.repo.local={repo_dir()}",
            "dependency:copy-dependencies", f"-DoutputDirectory={lib}",
        ]
        if quiet:
            cmd.insert(2, "-q")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise MavenError(f"mvn could not fetch {bundle}:\n{tail}")
        for old in home.glob(".fetched-*"):
            old.unlink()
        stamp.touch()
    jars = sorted(lib.glob("*.jar"))
    if not jars:
        raise MavenError(f"no jars in {lib}")
    return jars


def classpath(bundle: str) -> str:
    return os.pathsep.join(str(j) for j in fetch(bundle))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "fetch" or args[1] not in BUNDLES:
        print(f"usage: python -m scripts.maven fetch {{{','.join(BUNDLES)}}}", file=sys.stderr)
        return 2
    try:
        print(classpath(args[1]))
    except MavenError as exc:
        print(f"maven: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
