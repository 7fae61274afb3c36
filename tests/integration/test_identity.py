"""The node's long-term key pair: made once at first start, kept 0600,
the same across restarts, shown by `relaymesh status`, never replaced."""
import os
import re
import stat

import pytest

from conftest import NodeError


def key_path(n):
    return os.path.join(n.datadir, "node.key")


def test_key_made_at_first_start_and_kept(node_factory):
    n = node_factory(users=())
    p = key_path(n)
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(p) as f:
        assert f.readline() == "relaymesh node key v1\n"
    ident = n.status()["identity"]
    assert re.fullmatch(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}", ident["fingerprint"])
    assert len(ident["public_key"]) == 44
    assert "node.key" in ident["file"]
    human = n.cli_ok("status").stdout
    human = human if isinstance(human, str) else human.decode()
    assert ident["fingerprint"] in human
    before = open(p, "rb").read()
    n.stop()
    n.start()
    assert n.status()["identity"] == ident
    assert open(p, "rb").read() == before
    assert "event=node.identity_created" in n.stderr(0)
    assert "event=node.identity_created" not in n.stderr(1)


def test_two_nodes_have_different_keys(node_factory):
    a = node_factory(users=())
    b = node_factory(users=())
    assert a.status()["identity"]["fingerprint"] != \
        b.status()["identity"]["fingerprint"]


@pytest.mark.parametrize("content,why", [
    (b"garbage\n", "not a relaymesh node key"),
    (b"relaymesh node key v1\nAAAA\n", "does not decode to 32 bytes"),
])
def test_damaged_key_refused_never_replaced(node_factory, content, why):
    n = node_factory(users=())
    n.stop()
    with open(key_path(n), "wb") as f:
        f.write(content)
    with pytest.raises(NodeError) as e:
        n.start()
    assert why in str(e.value)
    assert open(key_path(n), "rb").read() == content


def test_key_readable_by_others_refused(node_factory):
    n = node_factory(users=())
    n.stop()
    os.chmod(key_path(n), 0o644)
    with pytest.raises(NodeError) as e:
        n.start()
    assert "chmod 600" in str(e.value)
