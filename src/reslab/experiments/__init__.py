"""The paper's experiments, each one command:

    reslab experiment degradation --data cifar10 --preset paper-cifar   # Figure 6
    reslab experiment depth --data cifar10 --preset paper-cifar         # Table 6
    reslab experiment shortcuts --data cifar10 --preset paper-cifar     # options A/B/C
    reslab experiment preact --data cifar10 --preset paper-cifar        # He et al. 2016
    reslab experiment budget --data cifar10 --preset paper-cifar --iters 8000 --budgets 2000 4000 8000 16000
    reslab experiment responses                                         # Figure 7, from the runs above

Every net of an experiment is trained with the same recipe (seeds 0..K-1) into
out/runs/<net>-s<seed>; the experiment then measures training error (eval mode,
whole training split), best validation error and test error, and writes
out/NAME/report.md, results.json and its figure. With the default `digits`
data and its short recipe an experiment finishes in minutes on a CPU.
"""

from .._lazy import exports

_WHERE = {
    "EXPERIMENTS": ".paper",
    "Net": ".paper",
    "Row": ".results",
    "Summary": ".results",
    "TRAINED": ".paper",
    "base_config": ".run",
    "check_recipe": ".run",
    "cifar_net": ".paper",
    "digits_recipe": ".run",
    "experiment_nets": ".paper",
    "layer_responses": ".responses",
    "net_config": ".run",
    "plot_experiment": ".report",
    "plot_responses": ".responses",
    "run_dir": ".results",
    "run_experiment": ".run",
    "run_responses": ".report",
    "submit_experiment": ".run",
    "summarize": ".results",
    "train_net": ".run",
    "write_report": ".report",
}
__getattr__, __dir__ = exports(__name__, _WHERE)

__all__ = ["EXPERIMENTS", "TRAINED", "Net", "Row", "Summary", "base_config", "check_recipe", "cifar_net",
           "digits_recipe", "experiment_nets", "layer_responses", "net_config", "plot_experiment",
           "plot_responses", "run_dir", "run_experiment", "run_responses", "submit_experiment", "summarize", "train_net",
           "write_report"]
