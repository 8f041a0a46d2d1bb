"""Frame sources behind one protocol (`base.FrameSource`); reconnect lives here.

`registry.open_source(cfg)` builds one from a recipe, `registry.source_for_paths(paths)` from
command-line paths (images and videos, chained in order). Modules: files, folder, hotfolder,
video, chain (several sources read in turn), capture (camera and stream),
decode (bytes -> BGR image), listing (which files count, natural order), lifecycle (states),
backoff (reconnect waits).
"""
