#!/usr/bin/env python3
# Builds the busybox-static container image the runtimes test harness runs everywhere (pod
# sandbox, pod containers, Docker container), without a registry: OUT/rootfs.tar (a root file
# system, for `docker import`) and OUT/image.tar (a docker-archive: layer tar, image config JSON
# and manifest.json, for `ctr -n k8s.io images import`). Standard library only; byte-reproducible.
#
# usage: image.py OUT_DIR IMAGE_REF [BUSYBOX]   e.g. image.py /tmp/x flowlens-busybox:test
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

# Applets the tests use (sh, sleep, nc, cat) and a few for looking around inside a container.
APPLETS = [
    "sh", "sleep", "nc", "cat", "echo", "ls", "ps", "ip", "ifconfig", "netstat", "hostname",
    "wc", "grep", "true", "false", "kill", "seq", "head", "tail", "env", "id", "uname",
]
DIRS = ["bin", "dev", "etc", "proc", "sys", "tmp", "run", "var", "root"]
# The sandbox ("pause") container runs the image's default command: sleep (almost) forever.
DEFAULT_CMD = ["/bin/sleep", "2147483647"]


def tar_rootfs(busybox):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(info, data=None):
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for d in DIRS:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            add(info)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        add(info, data)
        for applet in APPLETS:
            info = tarfile.TarInfo("bin/" + applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mode = 0o777
            add(info)
        for name, text in [
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            add(info, data)
    return buf.getvalue()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__ or "usage: image.py OUT_DIR IMAGE_REF [BUSYBOX]")
    out, ref = sys.argv[1], sys.argv[2]
    busybox = sys.argv[3] if len(sys.argv) == 4 else "/bin/busybox"
    os.makedirs(out, exist_ok=True)
    layer = tar_rootfs(busybox)
    with open(os.path.join(out, "rootfs.tar"), "wb") as f:
        f.write(layer)

    layer_digest = hashlib.sha256(layer).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": DEFAULT_CMD, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/runtimes/image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{
        "Config": config_name,
        "RepoTags": [ref],
        "Layers": [layer_digest + "/layer.tar"],
    }]
    files = [
        (config_name, config_bytes),
        (layer_digest + "/layer.tar", layer),
        ("manifest.json", json.dumps(manifest).encode()),
    ]
    with tarfile.open(os.path.join(out, "image.tar"), "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(layer_digest)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = 0
        tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
