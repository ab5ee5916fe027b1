"""``--preserve acl,xattr,perms`` HDFS -> HDFS on the real cluster (ACLs and xattrs enabled),
over webhdfs:// and hdfs:// (hdfs-native for ACLs, the NameNode's WebHDFS for xattrs): files
and the directories the copy creates carry the source's ACL entries, extended attributes and
modes, read back with plain WebHDFS REST calls. Where an end cannot keep them the copy is
refused up front (exit 2) instead of copying without them."""

from __future__ import annotations

import pytest
import requests

from tests.replicator.filesystems.test_hdfs_cluster import hdfs_remote, use_remotes


class Rest:
    def __init__(self, cluster) -> None:
        self.base = f"{cluster.webhdfs}/webhdfs/v1"
        self.user = cluster.superuser

    def call(self, method: str, path: str, op: str, **params) -> dict:
        r = requests.request(method, f"{self.base}{path}",
                             params={"op": op, "user.name": self.user, **params},
                             timeout=30)
        r.raise_for_status()
        return r.json() if r.content else {}

    def create(self, path: str, data: bytes) -> None:
        r = requests.put(f"{self.base}{path}", params={"op": "CREATE", "user.name": self.user},
                         allow_redirects=False, timeout=30)
        r.raise_for_status()
        requests.put(r.headers["Location"], data=data, timeout=30).raise_for_status()

    def acl(self, path: str) -> tuple[list[str], str]:
        st = self.call("GET", path, "GETACLSTATUS")["AclStatus"]
        return sorted(st["entries"]), st["permission"]

    def xattrs(self, path: str) -> dict[str, str]:
        got = self.call("GET", path, "GETXATTRS", encoding="hex").get("XAttrs") or []
        return {x["name"]: x["value"] for x in got}


def _source_tree(rest: Rest, root: str) -> None:
    rest.create(f"{root}/src/d/sub/f.txt", b"payload")
    rest.create(f"{root}/src/d/plain.txt", b"no attributes")
    rest.call("PUT", f"{root}/src/d/sub/f.txt", "MODIFYACLENTRIES",
              aclspec="user:alice:rwx,group:analysts:r--")
    rest.call("PUT", f"{root}/src/d/sub/f.txt", "SETXATTR", **{
        "xattr.name": "user.origin", "xattr.value": "0x68656c6c6f", "flag": "CREATE"})
    rest.call("PUT", f"{root}/src/d/sub/f.txt", "SETXATTR", **{
        "xattr.name": "trusted.tier", "xattr.value": "0x01ff", "flag": "CREATE"})
    rest.call("PUT", f"{root}/src/d", "MODIFYACLENTRIES",
              aclspec="default:user:alice:r-x,user:bob:r-x")
    rest.call("PUT", f"{root}/src/d", "SETXATTR", **{
        "xattr.name": "user.dataset", "xattr.value": "0x6f7264657273", "flag": "CREATE"})
    rest.call("PUT", f"{root}/src/d/sub", "SETPERMISSION", permission="700")


@pytest.mark.parametrize("scheme", ["webhdfs", "hdfs"])
def test_preserve_acl_xattr_and_directory_modes_hdfs_to_hdfs(
        scheme, hdfs_cluster, run_cli, remotes_file) -> None:
    rest = Rest(hdfs_cluster)
    root = hdfs_cluster.fresh_dir("acl")
    _source_tree(rest, root)
    host = hdfs_cluster.webhdfs.removeprefix("http://")

    def remote(path: str) -> dict:
        if scheme == "webhdfs":
            h, port = host.split(":")
            return {"type": "webhdfs", "host": h, "port": int(port), "root": path}
        return hdfs_remote(hdfs_cluster, path)

    use_remotes(run_cli, remotes_file, {"src": remote(f"{root}/src"), "kept": remote(f"{root}/kept"),
                                        "plain": remote(f"{root}/plain")})
    kept = run_cli("copy", "src:", "kept:", "--preserve", "times,perms,acl,xattr", "--json")
    assert kept.returncode == 0, kept.stderr
    assert kept.report["files_copied"] == 2 and kept.report["files_failed"] == 0
    plain = run_cli("copy", "src:", "plain:", "--json")
    assert plain.returncode == 0, plain.stderr

    for rel in ("d/sub/f.txt", "d/plain.txt", "d", "d/sub"):
        src, dst = f"{root}/src/{rel}", f"{root}/kept/{rel}"
        assert rest.acl(dst) == rest.acl(src), rel
        assert rest.xattrs(dst) == rest.xattrs(src), rel
    assert rest.xattrs(f"{root}/kept/d/sub/f.txt") == {"user.origin": "0x68656c6c6f",
                                                       "trusted.tier": "0x01ff"}
    assert rest.acl(f"{root}/kept/d")[0] == sorted([
        "user:bob:r-x", "group::r-x", "default:user::rwx", "default:user:alice:r-x",
        "default:group::r-x", "default:mask::r-x", "default:other::r-x"])
    assert rest.acl(f"{root}/kept/d/sub")[1] == "700"  # the created directory's mode
    # without --preserve acl,xattr nothing of the kind is copied
    assert rest.acl(f"{root}/plain/d/sub/f.txt")[0] == []
    assert rest.xattrs(f"{root}/plain/d/sub/f.txt") == {}
    assert rest.acl(f"{root}/plain/d/sub")[1] != "700"

    # a re-run copies nothing and keeps them
    again = run_cli("copy", "src:", "kept:", "--preserve", "times,perms,acl,xattr", "--json")
    assert again.returncode == 0 and again.report["files_copied"] == 0
    assert rest.xattrs(f"{root}/kept/d/sub/f.txt")["user.origin"] == "0x68656c6c6f"


def test_preserve_xattr_refused_where_an_end_cannot_keep_them(
        hdfs_cluster, tmp_path, run_cli, remotes_file) -> None:
    root = hdfs_cluster.fresh_dir("acl-refused")
    rest = Rest(hdfs_cluster)
    rest.create(f"{root}/src/f.txt", b"x")
    no_http = {k: v for k, v in hdfs_remote(hdfs_cluster, f"{root}/src").items()
               if k != "http_address"}
    use_remotes(run_cli, remotes_file, {"src": hdfs_remote(hdfs_cluster, f"{root}/src"),
                                        "nohttp": no_http})
    # hdfs-native has no xattr calls: without the NameNode's HTTP address it cannot
    refused = run_cli("copy", "nohttp:", str(tmp_path / "out"), "--preserve", "xattr")
    assert refused.returncode == 2
    assert "hdfs-native has no extended-attribute calls" in refused.stderr
    assert "http_address" in refused.stderr and "Traceback" not in refused.stderr
    # a local destination has no ACLs
    local = run_cli("copy", "src:", str(tmp_path / "out"), "--preserve", "acl")
    assert local.returncode == 2 and "destination cannot keep them" in local.stderr
    assert "file:// has no acl" in local.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
