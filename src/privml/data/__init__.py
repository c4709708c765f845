"""Datasets and their federated partitions.

Loaders return a :class:`Dataset` (float32 features, int64 labels, class names); nothing is
downloaded at run time:

- ``digits``        scikit-learn's bundled 8x8 digits, a seeded stratified 80/20 split;
- ``fashion-mnist`` the IDX files of the Debian package ``dataset-fashion-mnist``
                    (or ``$PRIVML_FASHION_MNIST``), with the dataset's own split;
- ``csv``           a CSV file of numeric features and a label column;
- ``synthetic``     generated Gaussian class clusters, any number of rows
                    (``synthetic:1000000``), a logistic regression's fair test.

:func:`read_feature_csv` reads rows to predict on (features, and labels if present).

Partitions hand each simulated client a set of row indices (IID, or label-skewed by a
Dirichlet draw); :class:`ClientData` is a view of the shared arrays, never a copy.
Bad files raise :class:`~privml.DataError`; bad arguments :class:`~privml.ConfigError`.
"""

from privml.data._csv import load_csv, read_feature_csv
from privml.data._dataset import Dataset
from privml.data._idx import read_idx
from privml.data._loaders import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    load_dataset,
    load_digits,
    load_fashion_mnist,
)
from privml.data._partition import (
    ClientData,
    Partition,
    partition,
    partition_dirichlet,
    partition_iid,
)
from privml.data._synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "ClientData",
    "Dataset",
    "Partition",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "make_synthetic",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "read_feature_csv",
    "read_idx",
]
