"""Data for the lab: CIFAR-10/100, Tiny Shakespeare, a synthetic set, on-device augmentation and resumable loaders.

Where data is found: an explicit folder (``data_dir=`` / ``path=``, the CLI's ``--data-dir``), else the
``NORMLAB_DATA`` environment variable; see :mod:`normlab.lab.data.paths` and each loader for the folder rule.
Without local data, loaders raise :class:`DataNotFoundError` saying how to get it, unless ``download=True``.

Typical use::

    data = load_cifar("cifar10", data_dir)                 # ImageData; check data.provenance.summary
    train = TensorLoader(data.train_images, data.train_labels, 128, seed=0, device="cuda", drop_last=True,
                         transform=ImageTransform(data.mean, data.std, crop_padding=4, flip=True))
    for inputs, labels in train: ...                       # float (B, 3, 32, 32) on the device
    checkpoint["loader"] = train.state_dict()              # exact resume: train.load_state_dict(...)

Examples:
    >>> from normlab.lab.data import make_synthetic_images, TensorLoader, ImageTransform
    >>> data = make_synthetic_images(num_train=16, num_test=8, image_size=8)
    >>> loader = TensorLoader(data.train_images, data.train_labels, batch_size=8,
    ...                       transform=ImageTransform(data.mean, data.std, crop_padding=2, flip=True))
    >>> inputs, labels = next(iter(loader))
    >>> inputs.shape, inputs.dtype, labels.shape
    (torch.Size([8, 3, 8, 8]), torch.float32, torch.Size([8]))
"""
from .augment import PADDING_MODES, ImageTransform, normalize, random_crop, random_flip
from .cifar import CIFAR_SPECS, CifarSpec, PartialDatasetWarning, find_cifar_folder, load_cifar, read_cifar_folder, \
    write_cifar_folder
from .download import DownloadError, download_and_extract, download_file, file_md5
from .image_data import FileCheck, ImageData, Provenance
from .loader import BlockLoader, TensorLoader, derive_generator, sample_blocks
from .paths import DATA_ENV, DataNotFoundError, data_root, default_download_root
from .safe_pickle import UnsafePickleError, restricted_load, restricted_loads
from .shakespeare import SHAKESPEARE_MD5, SHAKESPEARE_URL, CharCorpus, CharVocab, char_corpus, load_shakespeare
from .synthetic import make_synthetic_images

__all__ = [
    "load_cifar", "read_cifar_folder", "find_cifar_folder", "write_cifar_folder", "CIFAR_SPECS", "CifarSpec",
    "PartialDatasetWarning", "ImageData", "Provenance", "FileCheck",
    "load_shakespeare", "char_corpus", "CharCorpus", "CharVocab", "SHAKESPEARE_URL", "SHAKESPEARE_MD5",
    "make_synthetic_images",
    "random_crop", "random_flip", "normalize", "ImageTransform", "PADDING_MODES",
    "TensorLoader", "BlockLoader", "sample_blocks", "derive_generator",
    "DataNotFoundError", "DATA_ENV", "data_root", "default_download_root",
    "DownloadError", "download_file", "download_and_extract", "file_md5",
    "UnsafePickleError", "restricted_load", "restricted_loads",
]
