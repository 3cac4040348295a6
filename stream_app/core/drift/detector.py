"""The one API of the drift detectors (as river's): ``update(observation) -> Decision | None`` and ``reset()``.

A detector is pure statistics over ONE input partition. It is fed the partition's inputs in offset
order (``observation``: an ``Observation``, a ``WindowEnd`` or a ``Rewind``) and answers with a
``Decision`` when its test fires, or when a clean window ends an episode it fired on; otherwise
``None``. It knows nothing of the records published on the ``drift`` topic: no clock, no model
version, consumer group or worker, no product ids. ``monitor.PartitionWindows`` drives the
detectors of a partition and ``records.RecordBuilder`` turns their decisions into records.

Contract (tests/core/test_detector_conformance.py checks it for every detector):

* Deterministic: the same inputs from the same state give the same decisions.
* ``reset()`` returns to the state right after construction, episode memory included (unlike a
  ``Rewind``, which keeps the streak so that a replayed window is not counted twice).
* ``evidence_start``: the first offset a decision could still name as its evidence (``None``: none
  pending). The driver keeps the observations from there on to explain the next decision.
* A ``Rewind`` never yields a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from stream_app.core.drift.observation import Observation, Rewind, WindowEnd

Status = Literal["firing", "resolved"]
DetectorInput = Observation | WindowEnd | Rewind


@dataclass(frozen=True, slots=True)
class Decision:
    """What fired, in the detector's own terms.

    ``detector``: the detector's ``name`` (the record type). ``status``: ``firing`` (drift decided)
    or ``resolved`` (a clean window ends the episode). ``statistic`` is compared with ``threshold``
    (outlier count against the critical count; chi-square against its critical value; CUSUM
    log-likelihood ratio against h) over the ``n`` observations of the evidence, offsets
    ``[start_offset, end_offset)`` of the partition: the aligned window of a windowed test, the run
    of a CUSUM. ``p_value``: of the statistic, when the test has one. ``streak``: firing, the
    drifting windows in a row so far; resolved, the drifting windows it ends. ``resolves``: the
    ``[start, end)`` of the firing decision a resolution ends. ``channel``: which statistic of a
    detector with several fired (the CUSUM channel).
    """

    detector: str
    status: Status
    statistic: float
    threshold: float
    start_offset: int
    end_offset: int
    n: int
    p_value: float | None = None
    streak: int = 1
    resolves: tuple[int, int] | None = None
    channel: int = 0


@runtime_checkable
class Detector(Protocol):
    """A drift detector of one partition (see the module docstring for the contract)."""

    @property
    def name(self) -> str:
        """The ``detector`` of its decisions, which is also the type of their records."""
        ...

    @property
    def evidence_start(self) -> int | None:
        """First offset a decision could still name as evidence; ``None`` when nothing is pending."""
        ...

    def update(self, observation: DetectorInput) -> Decision | None:
        """Take the next input of the partition; a decision when the test fires or an episode ends."""
        ...

    def reset(self) -> None:
        """Back to the state right after construction."""
        ...
