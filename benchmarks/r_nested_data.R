# The command line and data of benchmarks/r_nested.R and benchmarks/r_glmmtmb_twice.R,
# sourced by both: sets args, src, form, fam, out, d (with the binomial trials, or 1, in
# d$.w) and family.  Arguments: DATA FORMULA FAMILY OUT.json [WEIGHTS], DATA a CSV file or
# "mlmRev::guPrenat" (the response "prenat" recoded y = prenat == "Modern", birthOrd
# unordered: treatment contrasts as in Python).
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]; form <- as.formula(args[2]); fam <- args[3]; out <- args[4]
wcol <- if (length(args) >= 5) args[5] else NA
if (src == "mlmRev::guPrenat") {
  suppressPackageStartupMessages(library(mlmRev))
  data(guPrenat, package = "mlmRev")
  d <- guPrenat
  d$y <- as.numeric(d$prenat == "Modern")
  # treatment contrasts for birthOrd (an ordered factor in mlmRev), as glmm_sm's formulas
  d$birthOrd <- factor(d$birthOrd, ordered = FALSE)
} else {
  d <- read.csv(src, stringsAsFactors = TRUE)
}
family <- switch(fam, binomial = binomial(), bernoulli = binomial(), poisson = poisson())
d$.w <- if (is.na(wcol)) 1 else d[[wcol]]
