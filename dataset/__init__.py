"""Data preparation: source loaders (``dataset.sources``), filtering (``dataset.filters``), the prepared-folder
format (``dataset.format``) and the build step (``dataset.prepare.prepare``)."""
