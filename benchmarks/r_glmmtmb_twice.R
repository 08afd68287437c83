# glmmTMB alone in a fresh R process, for benchmarks/bench_nested.py --tmb-twice and
# --fresh: the CPU seconds of library(glmmTMB), of the process's first glmmTMB fit and of
# the same fit again, REPEATS - 1 times (R's proc.time user + system), so that a first fit
# is compared with a first fit and a warm one with a warm one.  The data and the formula as
# for benchmarks/r_nested.R.  REPEATS: the environment variable GLMM_SM_REPEATS (default 2).
#
# Usage:
#   Rscript benchmarks/r_glmmtmb_twice.R DATA FORMULA FAMILY OUT.json [WEIGHTS]
t0 <- proc.time()
suppressPackageStartupMessages({library(glmmTMB); library(jsonlite)})
t1 <- proc.time()
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(here, "r_nested_data.R"))
cpu <- function(a, b) unname(sum((b - a)[c("user.self", "sys.self")]))
t2 <- proc.time()
f1 <- glmmTMB(form, data = d, family = family, weights = .w)
t3 <- proc.time()
again <- numeric(0)
same <- TRUE
repeats <- as.integer(Sys.getenv("GLMM_SM_REPEATS", "2"))
for (k in seq_len(max(repeats - 1, 1))) {
  a <- proc.time()
  f <- glmmTMB(form, data = d, family = family, weights = .w)
  again <- c(again, cpu(a, proc.time()))
  same <- same && identical(as.numeric(logLik(f1)), as.numeric(logLik(f)))
}
res <- list(library_s = cpu(t0, t1), first_s = cpu(t2, t3), again_s = again,
            same_llf = same,
            glmmTMB = as.character(packageVersion("glmmTMB")))
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA), out)
