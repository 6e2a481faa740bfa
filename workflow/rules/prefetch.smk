# Not part of a run: `snakemake prefetch --config experiment=NAME` on a machine with internet fills the cache
# (config `cache_dir`) with every hub model and dataset of the experiment; every other job then runs offline.
rule prefetch:
    output:
        at(layout.prefetch_record()),
    log:
        f"{RESULTS}/logs/prefetch.log",
    localrule: True
    conda:
        ENV
    resources:
        **job_resources("prefetch"),
    params:
        cfg=slice_of("prefetch"),
    shell:
        "grape prefetch --params {params.cfg:q} --output {output:q} > {log:q} 2>&1"
