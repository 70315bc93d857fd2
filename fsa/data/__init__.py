"""Targets and the data behind them: image files, captions, feature files, the embedded digits, the
paper's 15 images. The modules are imported where needed (`fsa.data.targets`, ...), so that the light
ones (the paper15 downloader) start without torch."""
