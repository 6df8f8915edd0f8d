"""The paper's studies at CPU scale, as small runners over the library (``fluxmatch experiment NAME``).

- ``controllable``: design weights shape a field on a 3-component mixture (the paper's Experiment 1);
- ``mixing``: a fast-mixing term against plain flux and DSM (the paper's Experiment 4);
- ``spiral``: the ring with a tangential reward, flux against DSM;
- ``structure``: causal and full-attention transformers on the coupled springs, flux against DSM;
- ``dag``: a DAG-masked field on a nonlinear chain X → Y → Z, flux against DSM.
"""

from .controllable import run_controllable
from .dag import run_dag
from .mixing import run_mixing
from .spiral import run_spiral
from .structure import StructureSettings, run_structure

EXPERIMENTS = {"controllable": run_controllable, "mixing": run_mixing, "spiral": run_spiral, "structure": run_structure, "dag": run_dag}

__all__ = ["EXPERIMENTS", "run_controllable", "run_mixing", "run_spiral", "run_structure", "run_dag", "StructureSettings"]
