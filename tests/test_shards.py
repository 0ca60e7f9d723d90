"""Webdataset tar shards (img2dataset layout): the embedded set written as shards and read back, random access and
streaming across ranks and DataLoader workers, and every kind of bad input under both policies."""
import collections
import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lverse_core import data
from lverse_core.config import ASSET_ENV, MissingAssetError, derive, load_profile, require_asset
from lverse_core.data import shapes_dataset, shards
from lverse_core.data.records import BadInputError
from lverse_core.data.shard_stream import shard_stream

SMALL = {"data.n_train": 24, "data.n_val": 6, "data.n_test": 6, "data.n_restval": 2, "data.ood_images": 2}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wds")
    c = load_profile("ci", **{"data.root": str(tmp / "data" / "ci"), "runs_dir": str(tmp / "runs"), **SMALL})
    shapes_dataset.ensure_shards(c)
    return c


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def members(tar_path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]


from _pretokenize_stubs import Recorder  # noqa: E402


# -- the embedded set as shards ------------------------------------------------------------------------------------

def test_embedded_shards_hold_the_karpathy_view(cfg):
    root = cfg.data_root / "wds"
    tars = sorted(root.glob("*.tar"))
    assert [t.name for t in tars] == [f"{i:05d}.tar" for i in range(len(tars))] and len(tars) >= 4
    names = [n for n, _ in members(tars[0])]
    key = names[0].split(".")[0]
    assert names[:3] == [f"{key}.jpg", f"{key}.json", f"{key}.txt"] and len(key) == 9  # img2dataset's layout
    for split in SPLITS:
        ref, got = data.caption_records(cfg, split), data.caption_records(cfg, split, source="wds")
        assert [r["image_id"] for r in got] == [r["image_id"] for r in ref]
        assert [r["captions"] for r in got] == [r["captions"] for r in ref]
        assert all(isinstance(r["path"], shards.ShardMember) and r["path"].is_file() for r in got)
        for i, (a, b) in enumerate(zip(ref, got)):
            jpeg = pixels(data.load_image(b["path"]))
            mse = ((jpeg - pixels(data.load_image(a["path"]))) ** 2).mean()
            # JPEG q95 of these small noisy scenes measured 27.8-34.6 dB; another scene is far off (< 20 dB)
            assert 10 * np.log10(255 ** 2 / mse) > 26, f"image {a['image_id']} differs by more than JPEG loss"
            nearest = min(((jpeg - pixels(data.load_image(r["path"]))) ** 2).mean() for r in ref if r is not a)
            assert nearest > 4 * mse  # and it is this scene, not a neighbour
    # the .txt is the first caption (img2dataset: one caption), the .json holds them all
    sample = dict(members(tars[0]))
    meta = json.loads(sample[f"{key}.json"])
    assert sample[f"{key}.txt"].decode() == meta["captions"][0] and meta["key"] == key


def test_shards_are_deterministic_and_leave_the_data_set_alone(cfg, tmp_path):
    root = cfg.data_root
    marker = (root / "COMPLETE.json").read_bytes()
    shapes_dataset.write_shards(root, tmp_path / "again")
    for tar in sorted((root / "wds").glob("*.tar")):
        assert (tmp_path / "again" / tar.name).read_bytes() == tar.read_bytes()
    stamp = (root / "wds" / "00000.tar").stat().st_mtime_ns
    assert shapes_dataset.ensure_shards(cfg) == root / "wds"
    assert (root / "wds" / "00000.tar").stat().st_mtime_ns == stamp  # not rewritten
    assert (root / "COMPLETE.json").read_bytes() == marker  # the data set was not made stale
    with Image.open(io.BytesIO(members(root / "wds" / "00000.tar")[0][1])) as im:
        assert im.format == "JPEG"


def test_consumers_read_shard_members(cfg):
    from lverse_core.evaluation.human_eval_form import image_data_uri
    from lverse_core.training.pretokenize import pretokenize_split

    records = data.caption_records(cfg, "val", source="wds")
    ds, ref = data.CaptionImageDataset(cfg, "val", records=records), data.CaptionImageDataset(cfg, "val")
    a, b = ds[2], ref[2]
    assert a["image_id"] == b["image_id"] and a["captions"] == b["captions"]
    assert a["image"].shape == b["image"].shape and (a["image"] - b["image"]).abs().mean() < 0.06  # JPEG loss
    assert image_data_uri(records[0]["path"]).startswith("data:image/png;base64,")

    c = load_profile("ci", **{"data.root": str(cfg.data_root), "runs_dir": str(cfg.runs_root),
                              "data.num_workers": 2, **SMALL})
    model = Recorder(c.image_grid)
    pretokenize_split(c, "val", model, "sha256:test", batch_size=4, records=records)  # members pickled to workers
    seen = torch.cat(model.seen)
    assert seen.shape[0] == len(records) and torch.equal(seen[2], a["image"])  # the loader's decoding, exactly
    index = json.loads((c.runs_root / "codes" / "val_index.json").read_text())
    assert index["image_ids"] == [r["image_id"] for r in records]


# -- streaming across ranks and workers ----------------------------------------------------------------------------

def stream_ids(cfg, split, monkeypatch, world=2, workers=2):
    """Image ids (and items) that each simulated torchrun rank reads with ``workers`` DataLoader workers."""
    per_rank, items = [], {}
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        loader = DataLoader(shard_stream(cfg, split), batch_size=3, num_workers=workers,
                            collate_fn=data.collate_captions)
        ids = []
        for batch in loader:
            ids += batch["image_id"].tolist()
            items.update({int(i): (img, caps) for i, img, caps in zip(batch["image_id"], batch["image"],
                                                                      batch["captions"])})
        per_rank.append(ids)
    return per_rank, items


@pytest.mark.parametrize("split", ["train", "test"])
def test_stream_reads_every_sample_once_across_ranks_and_workers(cfg, monkeypatch, split):
    per_rank, items = stream_ids(cfg, split, monkeypatch)
    records = data.caption_records(cfg, split, source="wds")
    counts = collections.Counter(i for ids in per_rank for i in ids)
    assert sorted(counts) == sorted(r["image_id"] for r in records) and set(counts.values()) == {1}
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])  # each rank reads its own shards
    tf = data.eval_transform(cfg.data.image_size)
    for r in records:
        image, captions = items[r["image_id"]]
        assert captions == r["captions"] and torch.equal(image, tf(data.load_image(r["path"])))


def test_train_source_wds_trains_on_every_shard_sample(cfg, monkeypatch):
    """L-Verse-CC from shards: train is every sample of the shards, val and test stay on data.source."""
    cc = derive(cfg, **{"data.train_source": "wds"})
    every = [r for s in SPLITS for r in data.caption_records(cfg, s, source="wds")]
    train = data.caption_records(cc, "train")
    assert [r["path"] for r in train] == [r["path"] for r in every] and data.caption_records(cc, "restval") == []
    assert data.caption_records(cc, "test") == data.caption_records(cfg, "test")  # the Karpathy view
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert [b["image_id"] for b in shard_stream(cc, "train")] == [r["image_id"] for r in every]
    # pre-tokenization reads the records' shard members itself; BiART pairs every caption with its image's codes
    from lverse_core.data.tokenizer import TextTokenizer
    from lverse_core.pipeline.eval_tables import ours_label
    from lverse_core.training.augvae_train import checkpoint_path
    from lverse_core.training.biart_train import paired_tokens
    from lverse_core.training.pretokenize import checkpoint_id, load_codes, pretokenize_split

    sl = checkpoint_path(cc, "sl")
    sl.parent.mkdir(parents=True, exist_ok=True)
    sl.write_bytes(b"stand-in SL weights")
    model = Recorder(cc.image_grid)
    pretokenize_split(cc, "train", model, checkpoint_id(sl), batch_size=8)
    assert load_codes(cc, "train")[1] == [r["image_id"] for r in every]
    tf = data.eval_transform(cc.data.image_size)
    assert torch.equal(torch.cat(model.seen)[5], tf(data.load_image(every[5]["path"])))
    tok = TextTokenizer.build(cc, [c for r in train for c in r["captions"]])
    assert len(paired_tokens(cc, tok, "train").text) == sum(len(r["captions"]) for r in every)
    assert "tar shards" in ours_label(cc) and ours_label(cc).startswith("L-Verse-CC")


def test_paper_dry_stand_ins_include_shards(tmp_path, monkeypatch):
    from lverse_core.data.stand_ins import ensure_stand_in_data

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    dry = load_profile("paper-dry", **{"data.n_train": 8, "data.n_val": 2, "data.n_test": 2, "data.image_size": 64,
                                       "data.gen_workers": 1, "data.num_workers": 0})
    ensure_stand_in_data(dry)
    assert require_asset(dry, "wds_shards") == dry.data_root / "stand_in_data" / "wds"
    test = data.caption_records(dry, "test", source="wds")
    assert [r["image_id"] for r in test] == [r["image_id"] for r in data.caption_records(dry, "test")]
    assert data.load_image(test[0]["path"]).size == (64, 64)


def test_hash_keys_get_position_ids(cfg, tmp_path, monkeypatch):
    src = members(cfg.data_root / "wds" / "00000.tar")
    out = tmp_path / "hashed"
    out.mkdir()
    renamed = [(f"k{name.split('.')[0][-3:]}x.{name.split('.', 1)[1]}", body) for name, body in src]
    write_tar(out / "00000.tar", renamed)
    n = len(src) // 3
    c = wds_cfg(tmp_path, out, "error", **{"data.n_val": 1, "data.n_test": 1})
    train = data.caption_records(c, "train")
    assert [r["image_id"] for r in train] == list(range(n - 2))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert [b["image_id"] for b in shard_stream(c, "test")] == [n - 1]


# -- bad input -----------------------------------------------------------------------------------------------------

def write_tar(path, files: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, body in files:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def wds_cfg(tmp_path, shard_dir, policy, **over):
    return load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "wds", "data.bad_input": policy,
                                 "data.ood_images": 0, "data.n_val": 2, "data.n_test": 2,
                                 "assets.wds_shards": str(shard_dir), **over})


def make_shards(cfg, tmp_path, problem, policy):
    """8 samples in two shards of 4 (train 4, val 2, test 2), copied from the embedded shards, the second sample
    of shard 00000 broken in one way. Returns (config, victim key, keys per shard)."""
    samples = collections.OrderedDict()
    for tar in sorted((cfg.data_root / "wds").glob("*.tar")):
        for name, body in members(tar):
            samples.setdefault(name.split(".")[0], []).append((name, body))
    keys = list(samples)[:8]
    victim = keys[1]
    files = {k: dict(samples[k]) for k in keys}
    jpg, txt, meta = f"{victim}.jpg", f"{victim}.txt", f"{victim}.json"
    if problem == "garbage_image":
        files[victim][jpg] = b"this is not a jpeg"
    elif problem == "truncated_image":
        files[victim][jpg] = files[victim][jpg][: len(files[victim][jpg]) // 2]
    elif problem == "missing_caption":
        del files[victim][txt]
    elif problem in ("empty_caption", "truncated_tar", "truncated_at_boundary"):
        if problem == "empty_caption":
            files[victim][txt] = b"  \n"
            del files[victim][meta]  # the .json's captions would stand in for the .txt
    out = tmp_path / f"shards-{problem}-{policy}"
    out.mkdir(parents=True)
    for s in range(2):
        write_tar(out / f"{s:05d}.tar", [(n, b) for k in keys[4 * s: 4 * s + 4] for n, b in files[k].items()])
    first = out / "00000.tar"
    if problem == "truncated_tar":  # cut inside the victim's image data
        with tarfile.open(first) as tar:
            m = tar.getmember(jpg)
        first.write_bytes(first.read_bytes()[: m.offset_data + m.size // 2])
    elif problem == "truncated_at_boundary":  # cut right after the victim's last member: no end-of-archive blocks
        with tarfile.open(first) as tar:
            last = [m for m in tar if m.name.startswith(victim)][-1]
        first.write_bytes(first.read_bytes()[: last.offset_data + -(-last.size // 512) * 512])
    return wds_cfg(tmp_path, out, policy), victim, [keys[:4], keys[4:]]


LISTING_PROBLEMS = [("missing_caption", "no caption member"), ("empty_caption", "empty caption"),
                    ("truncated_tar", "truncated inside this member"),
                    ("truncated_at_boundary", "without tar end-of-archive blocks")]


@pytest.mark.parametrize("problem, words", LISTING_PROBLEMS)
def test_listing_problems_follow_the_policy(cfg, tmp_path, caplog, monkeypatch, problem, words):
    c, victim, keys = make_shards(cfg, tmp_path, problem, "error")
    with pytest.raises(BadInputError, match=words) as e:
        [data.caption_records(c, s) for s in SPLITS]
    assert f"00000.tar#{victim}" in str(e.value) and "bad_input = skip" in str(e.value)
    with pytest.raises(BadInputError, match=words):
        shard_stream(c, "train")  # the stream lists through caption_records: same check, same message
    c, victim, keys = make_shards(cfg, tmp_path, problem, "skip")
    with caplog.at_level(logging.WARNING, logger="lverse_core.data"):
        got = [r["image_id"] for s in SPLITS for r in data.caption_records(c, s)]
    assert "skipped 1 bad input" in caplog.text and f"00000.tar#{victim}" in caplog.text
    lost = keys[0][2:] if problem.startswith("truncated") else []  # the samples after the cut are gone
    assert got == [int(k) for k in keys[0] + keys[1] if k != victim and k not in lost]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    streamed = [b["image_id"] for s in SPLITS for b in shard_stream(c, s)]
    assert sorted(streamed) == sorted(got)


def test_a_shard_without_one_readable_sample_follows_the_policy(cfg, tmp_path, caplog):
    c, victim, keys = make_shards(cfg, tmp_path, "none", "error")
    (tmp_path / "shards-none-error" / "00002.tar").write_bytes(b"")  # what a download killed at once leaves
    with pytest.raises(BadInputError, match="00002.tar: not a readable tar file.*bad_input = skip"):
        data.caption_records(c, "train")
    c = derive(c, **{"data.bad_input": "skip"})
    with caplog.at_level(logging.WARNING, logger="lverse_core.data"):
        got = [r["image_id"] for s in SPLITS for r in data.caption_records(c, s)]
    assert got == [int(k) for k in keys[0] + keys[1]] and "00002.tar: not a readable tar" in caplog.text


@pytest.mark.parametrize("problem", ["garbage_image", "truncated_image"])
def test_bad_images_follow_the_policy(cfg, tmp_path, caplog, monkeypatch, problem):
    c, victim, keys = make_shards(cfg, tmp_path, problem, "error")
    ds = data.CaptionImageDataset(c, "train")  # cheap construction: no image decoded yet
    assert len(ds) == 4 and ds[0]["image"].shape[0] == 3
    with pytest.raises(BadInputError, match="unreadable or truncated image") as e:
        ds[1]
    assert f"00000.tar#{victim}.jpg" in str(e.value) and "bad_input = skip" in str(e.value)
    with pytest.raises(BadInputError, match=f"00000.tar#{victim}.jpg: unreadable"):
        data.caption_records(c, "train", validate=True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(BadInputError, match=f"00000.tar#{victim}.jpg: unreadable.*bad_input = skip"):
        list(shard_stream(c, "train"))
    c, victim, keys = make_shards(cfg, tmp_path, problem, "skip")
    with caplog.at_level(logging.WARNING, logger="lverse_core.data"):
        assert data.CaptionImageDataset(c, "train")[1]["image_id"] == int(keys[0][2])  # the next valid item
        assert [b["image_id"] for b in shard_stream(c, "train")] == [int(k) for k in keys[0] if k != victim]
    assert f"00000.tar#{victim}.jpg" in caplog.text
    assert len(data.CaptionImageDataset(c, "train", validate=True)) == 3


def test_index_is_cached_and_rebuilt_when_a_shard_changes(cfg, tmp_path, monkeypatch):
    c, victim, keys = make_shards(cfg, tmp_path, "none", "error")
    assert len(data.caption_records(c, "train")) == 4
    assert len(list((c.data_root / "wds_index").glob("*.json"))) == 2

    def no_scan(shard):
        raise AssertionError(f"{shard} was scanned again")

    monkeypatch.setattr(shards, "scan_shard", no_scan)
    assert len(data.caption_records(c, "train")) == 4  # from the cache
    tar = c.assets.wds_shards + "/00000.tar"
    write_tar(tar, members(tar)[:-3])  # rewritten with a sample less: size and mtime change
    with pytest.raises(AssertionError, match="scanned again"):
        data.caption_records(c, "train")


def test_shards_are_indexed_in_worker_processes(cfg, tmp_path):
    c, victim, keys = make_shards(cfg, tmp_path, "missing_caption", "error")
    paths = shards.shard_paths(c.assets.wds_shards)
    by_workers = shards.shard_indexes(paths, tmp_path / "index", workers=2)  # spawned processes, then cached
    assert by_workers == [shards.scan_shard(p) for p in paths] and len(list((tmp_path / "index").glob("*.json"))) == 2
    assert by_workers[0]["samples"][1][0] == victim and "no caption member" in by_workers[0]["samples"][1][5]


def test_missing_shards_are_named(tmp_path, monkeypatch):
    for env in ASSET_ENV.values():
        monkeypatch.delenv(env, raising=False)
    c = load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "wds", "data.ood_images": 0})
    with pytest.raises(MissingAssetError, match="'wds_shards' is not configured.*LVERSE_WDS_SHARDS.*img2dataset"):
        data.caption_records(c, "train")
    monkeypatch.setenv("LVERSE_WDS_SHARDS", str(tmp_path / "nowhere"))
    c = load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "wds", "data.ood_images": 0})
    with pytest.raises(MissingAssetError, match="nowhere, which does not exist. Fix assets.wds_shards or LVERSE_WDS"):
        data.caption_records(c, "train")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LVERSE_WDS_SHARDS", str(tmp_path / "empty"))
    c = load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "wds", "data.ood_images": 0})
    with pytest.raises(BadInputError, match="empty: no .tar shards there"):
        data.caption_records(c, "train")
    from lverse_core.pipeline.doctor import needed_assets

    assert "wds_shards" in needed_assets(c) and "cc3m_tsv" not in needed_assets(c)


def _copied_samples(cfg, n: int) -> list[list[tuple[str, bytes]]]:
    """The first ``n`` samples of the embedded shards, each a list of (member name, bytes)."""
    samples = collections.OrderedDict()
    for tar in sorted((cfg.data_root / "wds").glob("*.tar")):
        for name, body in members(tar):
            samples.setdefault(name.split(".")[0], []).append((name, body))
    return list(samples.values())[:n]


def test_two_members_of_one_key_and_extension_refuse_the_shard_in_both_readers(cfg, tmp_path, caplog, monkeypatch):
    # the index kept the second member, the streaming reader refused the shard: now both refuse it
    samples = _copied_samples(cfg, 12)  # 4 in the damaged shard, 8 (train 4, val 2, test 2) in the other
    out = tmp_path / "dup"
    out.mkdir()
    first = [m for s in samples[:4] for m in s]
    jpg = next(m for m in samples[1] if m[0].endswith(".jpg"))
    first.insert(first.index(jpg) + 1, (jpg[0], samples[2][0][1]))  # the same name again, another image
    write_tar(out / "00000.tar", first)
    write_tar(out / "00001.tar", [m for s in samples[4:] for m in s])
    c = wds_cfg(tmp_path, out, "error")
    with pytest.raises(BadInputError, match=rf"00000.tar#{jpg[0]}: a second member for key .* extension .jpg"):
        data.caption_records(c, "train")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    c = derive(c, **{"data.bad_input": "skip"})
    with caplog.at_level(logging.WARNING, logger="lverse_core.data"):
        listed = [r["image_id"] for s in SPLITS for r in data.caption_records(c, s)]
    kept = [int(s[0][0].split(".")[0]) for s in samples[4:]]
    assert listed == kept and "a second member" in caplog.text  # the whole shard is left out
    assert sorted(b["image_id"] for s in SPLITS for b in shard_stream(c, s)) == sorted(kept)


def test_numeric_keys_beyond_int64_get_position_ids_in_both_readers(cfg, tmp_path, monkeypatch):
    samples = _copied_samples(cfg, 8)
    out = tmp_path / "bigkeys"
    out.mkdir()
    big = [[(f"{2**64 + i}.{name.split('.', 1)[1]}", body) for name, body in s] for i, s in enumerate(samples)]
    write_tar(out / "00000.tar", [m for s in big for m in s])
    c = wds_cfg(tmp_path, out, "error")
    ids = [r["image_id"] for s in SPLITS for r in data.caption_records(c, s)]
    assert ids == list(range(8))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    batches = DataLoader(shard_stream(c, "test"), batch_size=2, collate_fn=data.collate_captions)
    assert [int(i) for b in batches for i in b["image_id"]] == [6, 7]  # collated as int64 without overflow


def test_a_shard_rewritten_with_the_same_size_and_mtime_is_refused_on_read(cfg, tmp_path, monkeypatch):
    c, victim, keys = make_shards(cfg, tmp_path, "none", "error")
    recs = data.caption_records(c, "train")
    first = recs[0]["path"]
    assert first.read_bytes()[:2] == b"\xff\xd8"  # a JPEG, read through the re-checked header
    tar = tmp_path / "rewritten.tar"
    shard = first.shard
    st = shard.stat()
    samples = collections.OrderedDict()
    for name, body in members(shard):
        samples.setdefault(name.split(".")[0], []).append((name, body))
    order = list(samples.values())
    order[0], order[1] = order[1], order[0]  # the same members, two samples swapped: the same size
    write_tar(tar, [m for sample in order for m in sample])
    assert tar.stat().st_size == st.st_size
    tar.replace(shard)
    import os
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime: the cached index still looks current

    def no_scan(s):
        raise AssertionError(f"{s} was scanned again")

    monkeypatch.setattr(shards, "scan_shard", no_scan)
    stale = data.caption_records(c, "train")[0]["path"]  # from the cache, as before
    assert (stale.key, stale.offset) == (first.key, first.offset)
    with pytest.raises(BadInputError, match="changed since it was indexed"):
        stale.read_bytes()
