"""Image input/output: whole-slide readers and the NGFF 0.5 (zarr v3) writer.

:mod:`nclsm_scale.io.readers` opens source files (TIFF family, PNG/JPEG
composites, OME-Zarr) as picklable :class:`~nclsm_scale.io.readers.SourceInfo`
descriptors read region by region; :mod:`nclsm_scale.io.ome_zarr` creates images,
labels and their metadata; :mod:`nclsm_scale.io.pyramid` holds the pure numpy
downsampling used for image and label pyramids.
"""
