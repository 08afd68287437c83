# One glmer (Laplace, nAGQ = 1) or glmmTMB (Laplace) fit of a bench_scale.py data set, for
# benchmarks/bench_scale.py --r (one engine per R process, so that the parent's peak
# resident memory belongs to that fit).
#
# Usage:
#   Rscript benchmarks/r_scale.R DATA.csv FORMULA ENGINE OUT.json
# ENGINE is glmer or glmmTMB; the family is Bernoulli (binomial, logit).  Writes the
# estimates (fixed effects, variances, fixed effects' SEs), log-likelihood, the fit's CPU
# seconds (proc.time user + system, the fit alone: reading the CSV and loading the packages
# are excluded) and elapsed seconds, convergence messages, and the R and package versions
# as JSON.
suppressPackageStartupMessages({
  library(lme4); library(glmmTMB); library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]; form <- as.formula(args[2]); engine <- args[3]; out <- args[4]
d <- read.csv(src)
for (v in c("g", "h")) if (v %in% names(d)) d[[v]] <- factor(d[[v]])
t0 <- proc.time()
if (engine == "glmer") {
  fit <- glmer(form, data = d, family = binomial(), nAGQ = 1)
} else if (engine == "glmmTMB") {
  fit <- glmmTMB(form, data = d, family = binomial())
} else stop("ENGINE must be glmer or glmmTMB")
tt <- proc.time() - t0
if (engine == "glmer") {
  fe <- fixef(fit); vc <- sapply(VarCorr(fit), function(v) v[1, 1])
  se <- sqrt(diag(as.matrix(vcov(fit))))
  conv <- fit@optinfo$conv$lme4$messages
} else {
  fe <- fixef(fit)$cond; vc <- sapply(VarCorr(fit)$cond, function(v) v[1, 1])
  se <- sqrt(diag(vcov(fit)$cond))
  conv <- fit$fit$message
}
res <- list(
  data = src, formula = args[2], engine = engine, n = nrow(d),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  glmmTMB = as.character(packageVersion("glmmTMB"))),
  fixef = as.list(fe), varcomp = as.list(vc), se = as.list(se),
  llf = as.numeric(logLik(fit)), cpu_s = unname(tt["user.self"] + tt["sys.self"]),
  elapsed_s = unname(tt["elapsed"]), convergence = conv
)
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), out)
