"""The federated round protocol as a sans-IO state machine (no sockets, no sleep, no clock).

Feed :class:`RoundMachine.handle` events (:class:`ClientAvailable`, :class:`ClientDropped`,
:class:`UpdateReceived`, :class:`EvaluationReceived`, :class:`Tick`) together with the
current time, and perform the actions it returns (:class:`SendTask`, :class:`Aggregate`,
:class:`CloseRound`, :class:`SendEvaluation`, :class:`CloseEvaluation`, :class:`Finished`)
in order. The simulator and the HTTPS coordinator are both such shells.
"""

from privml.protocol._events import (
    Action,
    Aggregate,
    ClientAvailable,
    ClientDropped,
    CloseEvaluation,
    CloseRound,
    EvaluationReceived,
    Event,
    Finished,
    Outcome,
    RoundConfig,
    SendEvaluation,
    SendTask,
    Tick,
    UpdateReceived,
)
from privml.protocol._machine import Phase, RoundMachine

__all__ = [
    "Action",
    "Aggregate",
    "ClientAvailable",
    "ClientDropped",
    "CloseEvaluation",
    "CloseRound",
    "EvaluationReceived",
    "Event",
    "Finished",
    "Outcome",
    "Phase",
    "RoundConfig",
    "RoundMachine",
    "SendEvaluation",
    "SendTask",
    "Tick",
    "UpdateReceived",
]
