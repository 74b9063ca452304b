#!/usr/bin/env python3
# A minimal CRI v1 (runtime.v1.RuntimeService) client for the runtimes test harness
# (tests/support/runtimes.rs): what crictl would do, since cri-tools is not packaged. It compiles
# cri.proto (beside this file) with protoc into GEN_DIR at run time, talks gRPC to containerd's
# CRI plugin over its unix socket, reads a JSON request on stdin and prints its answer as
# space-separated lines (easy to parse from Rust without a JSON crate).
# Needs Debian's python3-grpcio, python3-protobuf and protobuf-compiler (run with /usr/bin/python3).
#
# usage: cri.py SOCKET GEN_DIR COMMAND < request.json
#   wait        {"timeout": s}    until RuntimeReady and NetworkReady -> "runtime NAME VERSION API"
#   run-pod     {"name","namespace","uid","image","cgroup_parent","log_directory",
#                "containers": [{"name", "command": [...],
#                                "mounts": [{"host_path", "container_path"}] (optional, read-only)}]}
#               -> "sandbox ID", "ip IP", then "container NAME ID" per container, in order
#   list        {} -> "pod ID NAMESPACE NAME UID STATE" and "container ID SANDBOX_ID NAME STATE"
#   remove-pods {"ids": [...]} (absent: all) stops and removes the pods' containers, then the
#               pods -> "removed-container ID", "removed-pod ID", "error TEXT" (exit 1 on errors)
#   exec        {"container_id", "cmd": [...], "timeout": s} -> the command's stdout and stderr,
#               and its exit code as ours
import json
import os
import subprocess
import sys
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = "/runtime.v1.RuntimeService/"
RPC_TIMEOUT = 60


def load_pb2(gen_dir):
    os.makedirs(gen_dir, exist_ok=True)
    if not os.path.exists(os.path.join(gen_dir, "cri_pb2.py")):
        subprocess.run(
            ["protoc", "--proto_path=" + HERE, "--python_out=" + gen_dir, "cri.proto"],
            check=True,
        )
    sys.path.insert(0, gen_dir)
    import cri_pb2  # noqa: E402  (generated just above)

    return cri_pb2


class Client:
    def __init__(self, socket, pb):
        self.pb = pb
        self.channel = grpc.insecure_channel("unix://" + socket)

    def call(self, method, request, response_type):
        stub = self.channel.unary_unary(
            SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return stub(request, timeout=RPC_TIMEOUT)


def cmd_wait(c, pb, req):
    deadline = time.time() + req.get("timeout", 30)
    last = None
    while True:
        try:
            status = c.call("Status", pb.StatusRequest(), pb.StatusResponse).status
            conds = {x.type: (x.status, x.reason, x.message) for x in status.conditions}
            last = conds
            if all(conds.get(k, (False,))[0] for k in ("RuntimeReady", "NetworkReady")):
                version = c.call("Version", pb.VersionRequest(version="v1"), pb.VersionResponse)
                return ["runtime %s %s %s" % (version.runtime_name, version.runtime_version,
                                              version.runtime_api_version)]
        except grpc.RpcError as e:
            last = str(e.code())
        if time.time() > deadline:
            raise SystemExit("CRI not ready: %s" % (last,))
        time.sleep(0.1)


def sandbox_config(pb, req):
    labels = {
        # What the kubelet puts on every sandbox.
        "io.kubernetes.pod.name": req["name"],
        "io.kubernetes.pod.namespace": req["namespace"],
        "io.kubernetes.pod.uid": req["uid"],
        "flowlens.test": "1",
    }
    ns = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=req["name"], uid=req["uid"], namespace=req["namespace"], attempt=0),
        hostname=req["name"],
        log_directory=req["log_directory"],
        labels=labels,
        annotations={"kubernetes.io/config.source": "flowlens-test"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=req["cgroup_parent"],
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns),
        ),
    )


def cmd_run_pod(c, pb, req):
    config = sandbox_config(pb, req)
    os.makedirs(req["log_directory"], mode=0o755, exist_ok=True)  # the kubelet creates it
    sid = c.call("RunPodSandbox", pb.RunPodSandboxRequest(config=config),
                 pb.RunPodSandboxResponse).pod_sandbox_id
    status = c.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sid),
                    pb.PodSandboxStatusResponse).status
    out = ["sandbox " + sid, "ip " + status.network.ip]
    for spec in req["containers"]:
        labels = dict(config.labels)
        labels["io.kubernetes.container.name"] = spec["name"]
        cconf = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=spec["name"], attempt=0),
            image=pb.ImageSpec(image=req["image"]),
            command=spec["command"],
            labels=labels,
            log_path="%s/0.log" % spec["name"],
            mounts=[pb.Mount(host_path=m["host_path"], container_path=m["container_path"],
                             readonly=True) for m in spec.get("mounts", [])],
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(
                        network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))),
        )
        cid = c.call("CreateContainer",
                     pb.CreateContainerRequest(pod_sandbox_id=sid, config=cconf,
                                               sandbox_config=config),
                     pb.CreateContainerResponse).container_id
        c.call("StartContainer", pb.StartContainerRequest(container_id=cid),
               pb.StartContainerResponse)
        out.append("container %s %s" % (spec["name"], cid))
    return out


def list_all(c, pb):
    pods = c.call("ListPodSandbox", pb.ListPodSandboxRequest(), pb.ListPodSandboxResponse).items
    ctrs = c.call("ListContainers", pb.ListContainersRequest(),
                  pb.ListContainersResponse).containers
    return pods, ctrs


def cmd_list(c, pb, req):
    pods, ctrs = list_all(c, pb)
    return ["pod %s %s %s %s %s" % (p.id, p.metadata.namespace, p.metadata.name, p.metadata.uid,
                                     pb.PodSandboxState.Name(p.state)) for p in pods] + [
        "container %s %s %s %s" % (x.id, x.pod_sandbox_id, x.metadata.name,
                                   pb.ContainerState.Name(x.state)) for x in ctrs]


def cmd_remove_pods(c, pb, req):
    pods, ctrs = list_all(c, pb)
    wanted = set(req["ids"]) if req.get("ids") is not None else {p.id for p in pods}
    out = []
    for x in ctrs:
        if x.pod_sandbox_id not in wanted:
            continue
        try:
            c.call("StopContainer", pb.StopContainerRequest(container_id=x.id, timeout=0),
                   pb.StopContainerResponse)
            c.call("RemoveContainer", pb.RemoveContainerRequest(container_id=x.id),
                   pb.RemoveContainerResponse)
            out.append("removed-container " + x.id)
        except grpc.RpcError as e:
            out.append("error container %s: %s" % (x.id, e.details()))
    for sid in wanted:
        try:
            c.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid),
                   pb.StopPodSandboxResponse)
            c.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid),
                   pb.RemovePodSandboxResponse)
            out.append("removed-pod " + sid)
        except grpc.RpcError as e:
            out.append("error pod %s: %s" % (sid, e.details()))
    return out


def cmd_exec(c, pb, req):
    r = c.call("ExecSync",
               pb.ExecSyncRequest(container_id=req["container_id"], cmd=req["cmd"],
                                  timeout=req.get("timeout", 30)),
               pb.ExecSyncResponse)
    sys.stdout.buffer.write(r.stdout)
    sys.stderr.buffer.write(r.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(r.exit_code)


COMMANDS = {
    "wait": cmd_wait,
    "run-pod": cmd_run_pod,
    "list": cmd_list,
    "remove-pods": cmd_remove_pods,
    "exec": cmd_exec,
}


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in COMMANDS:
        sys.exit("usage: cri.py SOCKET GEN_DIR {%s} < request.json" % ",".join(COMMANDS))
    socket, gen_dir, command = sys.argv[1:]
    pb = load_pb2(gen_dir)
    text = sys.stdin.read().strip()
    req = json.loads(text) if text else {}
    client = Client(socket, pb)
    try:
        answer = COMMANDS[command](client, pb, req)
    except grpc.RpcError as e:
        sys.exit("CRI %s failed: %s: %s" % (command, e.code(), e.details()))
    for line in answer:
        print(line)
    if any(line.startswith("error ") for line in answer):
        sys.exit(1)


if __name__ == "__main__":
    main()
