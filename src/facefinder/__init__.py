"""facefinder: a self-hosted, accountable face search engine.

The public Python API is a handful of verbs on :class:`FaceFinder`::

    from facefinder import FaceFinder
    ff = FaceFinder("~/.facefinder")
    ff.ingest("photos/", collection="family")
    for probe_face in ff.search("probe.jpg"):
        print(probe_face.candidates[0].source, probe_face.candidates[0].score)
"""

__all__ = ["FaceFinder"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported lazily so that `import facefinder.vision...` does not load the whole stack.
    if name == "FaceFinder":
        from facefinder.services.engine import FaceFinder

        return FaceFinder
    raise AttributeError(name)
