## lme4's Laplace fit of the correlated random intercept and urban slope for Contraception,
## a cross-check (not the reference) for contraception_aghq2d.json.  Run from tests/results:
##   Rscript contraception_lme4.R
## It reads ../data/contraception.csv (mlmRev's Contraception, see ../data/README.md) and
## writes contraception_lme4.csv: '#' lines (R and lme4 versions, the call, lme4's
## convergence messages), then one row per quantity (fixed effects with lme4's names, the
## district covariance entries, logLik) with its estimate and standard error.
suppressPackageStartupMessages(library(lme4))
d <- read.csv("../data/contraception.csv", colClasses = c(district = "character"))
d$use <- factor(d$use, levels = c("N", "Y"))
d$livch <- factor(d$livch, levels = c("0", "1", "2", "3+"))
d$urban <- factor(d$urban, levels = c("N", "Y"))
d$district <- factor(d$district)
fit <- glmer(use ~ age + I(age^2) + urban + livch + (1 + urban | district), d, binomial,
             control = glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
print(summary(fit))
print(VarCorr(fit), comp = c("Variance", "Std.Dev."))
S <- VarCorr(fit)$district
fe <- fixef(fit)
out <- data.frame(
  name = c(names(fe), "district Var(Intercept)", "district Cov(urbanY, Intercept)",
           "district Var(urbanY)", "logLik"),
  estimate = c(unname(fe), S[1, 1], S[2, 1], S[2, 2], as.numeric(logLik(fit))),
  se = c(sqrt(diag(as.matrix(vcov(fit)))), NA, NA, NA, NA))
messages <- fit@optinfo$conv$lme4$messages
header <- c(paste0("# ", R.version.string, "; lme4 ", packageVersion("lme4"),
                   "; Laplace (nAGQ = 1), optimizer bobyqa"),
            "# glmer(use ~ age + I(age^2) + urban + livch + (1 + urban | district), d, binomial)",
            paste0("# lme4 convergence messages: ",
                   if (length(messages)) gsub("\n", " ", paste(messages, collapse = "; "))
                   else "none"))
con <- file("contraception_lme4.csv", "w")
writeLines(header, con)
write.csv(out, con, row.names = FALSE)
close(con)
