# glmmTMB's nbinom2 fit of the Owls data (the Laplace approximation), reference for
# tests/test_negbin.py::test_laplace_matches_glmmtmb.  Run: Rscript tests/results/owls_glmmtmb.R
library(glmmTMB)
data(Owls)
f <- glmmTMB(SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) +
               (1 | Nest), family = nbinom2, data = Owls)
options(digits = 12)
cat("glmmTMB", as.character(packageVersion("glmmTMB")), "R", R.version.string, "\n")
cat("beta", fixef(f)$cond, "\n")
cat("se", sqrt(diag(vcov(f)$cond)), "\n")
cat("nu", VarCorr(f)$cond$Nest[1, 1], "\n")
cat("theta", sigma(f), "\n")
cat("logLik", as.numeric(logLik(f)), "\n")
cat("convergence", f$fit$convergence, "\n")
