"""Data: the embedded shapes data set (``shapes``: scenes and captions; ``shapes_dataset``: writing it to disk;
``ood``: out-of-domain photographs), the loaders for the real formats (``loaders``: ImageFolder, Karpathy
``dataset_coco.json``, CC3M TSV, tar shards, with one bad-input policy; ``records``: the schema check of every
listing entry; ``shards``: img2dataset's webdataset tar shards, indexed for reads by byte offset; ``shard_stream``:
streaming them across torchrun ranks and DataLoader workers) and the CLIP BPE text tokenizer (``tokenizer``).

The loaders' public names are re-exported here, so ``from lverse_core import data; data.image_dataset(cfg, ...)``
reads as it did before the package was split by stage.
"""
from lverse_core.data.loaders import (  # noqa: F401  (re-exported)
    BadInputError, CaptionImageDataset, ImageFolderDataset, caption_records, collate_captions, eval_transform,
    image_dataset, load_attributes, load_image, ood_images, to_pil, train_transform)
