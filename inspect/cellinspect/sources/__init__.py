"""Frame sources behind one protocol (`base.FrameSource`); reconnect lives here.

`registry.open_source(cfg)` builds one from a recipe, `registry.source_for_paths(paths)` from
command-line paths. Modules: files, folder, hotfolder, video, capture (camera and stream),
decode (bytes -> BGR image), listing (which files count, natural order), lifecycle (states),
backoff (reconnect waits).
"""
