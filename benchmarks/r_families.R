# R's fits of the issue-22 models (negative binomial, probit, cloglog), kept as a cross-check
# of the package's exact-quadrature references.  Run from the repository root:
#   Rscript benchmarks/r_families.R > tests/results/r_families/r_families.txt
# Data: R's own copies (glmmTMB::Owls, mlmRev::Contraception, lme4::cbpp).  Times are the
# elapsed seconds of one fit on this machine (2 cores, shared), for benchmarks/README.md only.
suppressMessages({library(lme4); library(glmmTMB); library(mlmRev)})
cat("R:", R.version.string, " lme4:", format(packageVersion("lme4")),
    " glmmTMB:", format(packageVersion("glmmTMB")), " mlmRev:", format(packageVersion("mlmRev")), "\n")
show <- function(label, fit, secs) {
  cat("\n##", label, "\n")
  cat(sprintf("seconds %.2f\n", secs))
  cat(sprintf("logLik %.6f\n", as.numeric(logLik(fit))))
  if (inherits(fit, "glmmTMB")) {
    fe <- fixef(fit)$cond; se <- sqrt(diag(vcov(fit)$cond))
    vc <- VarCorr(fit)$cond
    for (g in names(vc)) cat(sprintf("var %s %.8f\n", g, vc[[g]][1, 1]))
    if (!is.null(sigma(fit)) && family(fit)$family == "nbinom2")
      cat(sprintf("theta %.8f alpha %.8f\n", sigma(fit), 1 / sigma(fit)))
  } else {
    fe <- fixef(fit); se <- sqrt(diag(as.matrix(vcov(fit))))
    vc <- as.data.frame(VarCorr(fit))
    for (i in seq_len(nrow(vc))) cat(sprintf("var %s %.8f\n", vc$grp[i], vc$vcov[i]))
    if (inherits(fit, "glmerMod") && grepl("Negative Binomial", family(fit)$family)) {
      th <- getME(fit, "glmer.nb.theta")
      cat(sprintf("theta %.8f alpha %.8f\n", th, 1 / th))
    }
  }
  for (i in seq_along(fe)) cat(sprintf("beta %s %.8f se %.8f\n", names(fe)[i], fe[i], se[i]))
}
timed <- function(expr) { t0 <- proc.time()[["elapsed"]]; v <- eval.parent(substitute(expr));
  list(fit = v, secs = proc.time()[["elapsed"]] - t0) }

data(Owls, package = "glmmTMB")
r <- timed(glmmTMB(SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) +
                   (1 | Nest), family = nbinom2, data = Owls))
show("Owls NB2 glmmTMB (Laplace)", r$fit, r$secs)
r <- timed(glmer.nb(SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) +
                    (1 | Nest), data = Owls))
show("Owls NB2 glmer.nb (Laplace)", r$fit, r$secs)
r <- timed(glmer(SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) +
                 (1 | Nest), family = poisson, data = Owls, nAGQ = 25))
show("Owls Poisson glmer nAGQ=25", r$fit, r$secs)
r <- timed(glmer(SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) +
                 (1 | Nest), family = poisson, data = Owls))
show("Owls Poisson glmer (Laplace)", r$fit, r$secs)

data(Contraception, package = "mlmRev")
r <- timed(glmer(use ~ age + urban + livch + (1 | district), family = binomial("probit"),
                 data = Contraception, nAGQ = 25))
show("Contraception probit glmer nAGQ=25", r$fit, r$secs)
r <- timed(glmer(use ~ age + urban + livch + (1 | district), family = binomial("cloglog"),
                 data = Contraception, nAGQ = 25))
show("Contraception cloglog glmer nAGQ=25", r$fit, r$secs)

data(cbpp, package = "lme4")
r <- timed(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
                 family = binomial("cloglog"), data = cbpp, nAGQ = 25))
show("cbpp cloglog glmer nAGQ=25", r$fit, r$secs)
r <- timed(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
                 family = binomial("probit"), data = cbpp, nAGQ = 25))
show("cbpp probit glmer nAGQ=25", r$fit, r$secs)
