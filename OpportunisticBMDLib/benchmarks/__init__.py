"""One module per ``obmd bench`` benchmark, each exposing ``register(subparsers)``.

Every benchmark prints its figures and, with ``--json PATH``, writes them as JSON
(:func:`OpportunisticBMDLib.benchmarks.common.write_json`)."""
