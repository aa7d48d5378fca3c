"""``--shard I/N``: N machines over one tree do every file exactly once."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from refacex_plugin.batch import Shard, iter_jobs, shard_of
from refacex_plugin.cli import main
from refacex_plugin.errors import RefacexError
from refacex_plugin.keys import write_key_file


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.output


@pytest.fixture
def tree(tmp_path):
    """12 distinct small images (no faces: quick to work on) in nested folders."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(7)
    for i in range(12):
        d = root / ("a" if i % 3 == 0 else "b/c" if i % 3 == 1 else "")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(d / f"img{i:02d}.png")
    return root


def _rels(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


def test_shard_of_hashes_the_relative_path_alone():
    """Fixed values: a release that changed them would split a running job's shards differently."""
    assert [shard_of(f"a/img{i}.jpg", 4) for i in range(8)] == [shard_of(Path("a") / f"img{i}.jpg", 4) for i in range(8)]
    assert shard_of("a/b.jpg", 1) == 1
    assert [shard_of(f"img{i}.jpg", 3) for i in range(6)] == [3, 2, 2, 3, 1, 2]
    # NFC and NFD spellings of one name (macOS writes NFD) fall in the same shard
    assert shard_of("caf\u00e9.jpg", 7) == shard_of("cafe\u0301.jpg", 7)
    counts = np.bincount([shard_of(f"d{i // 50}/f{i}.png", 4) for i in range(4000)], minlength=5)[1:]
    assert counts.min() > 900 and counts.max() < 1100  # about even


def test_shards_are_disjoint_cover_the_tree_and_survive_added_files(tree):
    every = {j.rel.as_posix() for j in iter_jobs([tree], None, True)}
    parts = [{j.rel.as_posix() for j in iter_jobs([tree], None, True, Shard(i, 3))} for i in (1, 2, 3)]
    assert set.union(*parts) == every and sum(map(len, parts)) == len(every) == 12
    assert all(parts)  # 12 files: each of 3 shards has some
    # the same tree mounted elsewhere, and files added later: no file changes shard
    moved = tree.rename(tree.parent / "mounted-elsewhere")
    Image.new("RGB", (8, 8)).save(moved / "a" / "new.png")
    again = [{j.rel.as_posix() for j in iter_jobs([moved], None, True, Shard(i, 3))} for i in (1, 2, 3)]
    assert [b - {"a/new.png"} for b in again] == parts


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1/0", "0/0", "-1/2", "a/b", "1", "1/2/3", "", "1.0/2", "½/2"])
def test_malformed_shards_are_refused_in_one_line(tree, tmp_path, bad):
    with pytest.raises(RefacexError, match="--shard"):
        Shard.parse(bad)
    for args in (["anonymise", tree, "-r", "-o", tmp_path / "out", "--method", "pixelate"], ["recover", tree, "-r", "-o", tmp_path / "r"]):
        code, text = run(*args, "--shard", bad, "--key-file", tmp_path / "missing.key", "--vault", tmp_path / "v.db")
        assert code == 2 and text.startswith("error: --shard") and len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "out").exists() and not (tmp_path / "v.db").exists()


def test_anonymise_and_recover_two_shards_cover_the_folder_once(tree, tmp_path):
    key, vault = tmp_path / "admin.key", tmp_path / "faces.vault"
    write_key_file(key)
    outs = []
    for i in (1, 2):
        out = tmp_path / f"anon{i}"
        code, text = run(
            "anonymise", tree, "-r", "-o", out, "--method", "pixelate", "--key-file", key, "--vault", vault, "--shard", f"{i}/2"
        )
        assert code == 0, text
        assert f"shard {i}/2: {len(_rels(out))} of 12 file(s)" in text
        outs.append(_rels(out))
    assert not outs[0] & outs[1] and outs[0] | outs[1] == _rels(tree)
    assert outs[0] and outs[1]
    code, text = run("anonymise", tree, "-r", "-o", tmp_path / "all", "--method", "pixelate", "--shard", "1/1")
    assert code == 0 and _rels(tmp_path / "all") == _rels(tree), text
    # recover shards too: each machine restores its own part of a shared anonymised tree
    shared = tmp_path / "shared"
    for out in ("anon1", "anon2"):
        for p in (tmp_path / out).rglob("*.png"):
            (shared / p.relative_to(tmp_path / out)).parent.mkdir(parents=True, exist_ok=True)
            (shared / p.relative_to(tmp_path / out)).write_bytes(p.read_bytes())
    back = []
    for i in (1, 2):
        out = tmp_path / f"back{i}"
        code, text = run("recover", shared, "-r", "-o", out, "--key-file", key, "--vault", vault, "--shard", f"{i}/2")
        assert code == 0, text
        back.append(_rels(out))
        for rel in back[-1]:
            assert (out / rel).read_bytes() == (tree / rel).read_bytes()  # the very original file
    assert back == outs
