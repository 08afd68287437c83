# glmer (Laplace, nAGQ = 1) and glmmTMB (Laplace) fits of a nested design, for
# benchmarks/bench_nested.py and the guPrenat reference in tests/results/.
#
# Usage:
#   Rscript benchmarks/r_nested.R DATA FORMULA FAMILY OUT.json [WEIGHTS]
# DATA is a CSV file, or "mlmRev::guPrenat" for mlmRev's copy (the response "prenat" is
# recoded y = prenat == "Modern", birthOrd unordered: treatment contrasts as in Python).  FAMILY is binomial or poisson; WEIGHTS names a column of
# binomial trials (the formula's response is then a proportion column the caller wrote).
# Writes the estimates (fixed effects, variances), log-likelihood, CPU and elapsed seconds,
# and the R and package versions as JSON.
suppressPackageStartupMessages({
  library(lme4); library(glmmTMB); library(jsonlite)
})
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(here, "r_nested_data.R"))
one <- function(label, expr) {
  t0 <- proc.time()
  fit <- eval(expr)
  tt <- proc.time() - t0
  list(fit = fit, cpu = unname(tt["user.self"] + tt["sys.self"]), elapsed = unname(tt["elapsed"]))
}
g <- one("glmer", quote(glmer(form, data = d, family = family, weights = .w, nAGQ = 1)))
tm <- one("glmmTMB", quote(glmmTMB(form, data = d, family = family, weights = .w)))
vc_glmer <- sapply(VarCorr(g$fit), function(v) v[1, 1])
vc_tmb <- sapply(VarCorr(tm$fit)$cond, function(v) v[1, 1])
res <- list(
  data = src, formula = args[2], family = fam, n = nrow(d),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  glmmTMB = as.character(packageVersion("glmmTMB"))),
  glmer = list(fixef = as.list(fixef(g$fit)), varcomp = as.list(vc_glmer),
               se = as.list(sqrt(diag(as.matrix(vcov(g$fit))))),
               llf = as.numeric(logLik(g$fit)), cpu_s = g$cpu, elapsed_s = g$elapsed,
               warnings = g$fit@optinfo$conv$lme4$messages),
  glmmTMB = list(fixef = as.list(fixef(tm$fit)$cond), varcomp = as.list(vc_tmb),
                 se = as.list(sqrt(diag(vcov(tm$fit)$cond))),
                 llf = as.numeric(logLik(tm$fit)), cpu_s = tm$cpu, elapsed_s = tm$elapsed,
                 convergence = tm$fit$fit$convergence)
)
if (src == "mlmRev::guPrenat") res$versions$mlmRev <- as.character(packageVersion("mlmRev"))
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), out)
