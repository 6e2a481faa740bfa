# GRAPE experiment workflow: compose -> data -> models -> sample -> verify -> score -> select -> sft -> evaluate -> report.
#   snakemake --cores 2                                   # the embedded demo experiment
#   snakemake --cores 2 --config experiment=tiny          # another experiment (config/experiment/*.yaml)
#   snakemake --cores 2 --config overrides="sft.lr=2e-4 sample.n=8"   # Hydra-style overrides of any key
#   snakemake --report results/demo/report.html           # the HTML report, after a run
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/compose.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/reward.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
