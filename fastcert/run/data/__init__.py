"""Datasets as researchers get them: MNIST, CIFAR-10, TinyImageNet, subsets and synthetic stand-ins.

Modules: ``integrity`` (md5 tables, errors, atomic extraction; no torch, so the ``fastcert`` command
names a missing dataset without importing it), ``mnist`` / ``cifar`` / ``tinyimagenet`` /
``synthetic`` (one per source format), ``augment`` (on-device flip + edge-padded crop), ``splits``
(:class:`~fastcert.run.data.splits.Split`, subsets) and ``loading``
(:func:`~fastcert.run.data.loading.load_dataset`). What each dataset is (shapes, sizes, sources,
:class:`~fastcert.datasets.DatasetInfo`) is :mod:`fastcert.datasets`. This package module imports
nothing, so that importing one of its torch-free modules never imports torch.
"""
