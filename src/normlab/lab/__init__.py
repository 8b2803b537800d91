"""The lab: data, models, training, the results store, sweeps and studies.

Import the parts you need (``normlab.lab.data``, ``normlab.lab.store``, ...); this package file stays empty
so that importing one part never pulls in the others.
"""
