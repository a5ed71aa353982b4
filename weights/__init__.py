"""The shipped weights: manifests (``*.json``) and the zoo's own weight files.

This folder is installed as the package ``zoo._weights`` (see ``package-dir`` in
pyproject.toml) so that ``zoo.pretrained.manifests.weights_dir`` finds it with
``importlib.resources`` in wheels and editable installs alike.
"""
