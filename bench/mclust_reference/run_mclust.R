# Reference partitions from R's mclust for tests/test_mclust.py (run once; R is not a
# dependency of stagate or of its tests). Usage:
#   Rscript bench/mclust_reference/run_mclust.R tests/data/mclust
# For every <name>.csv.gz input listed in cases.csv (name, G, model, seed) it fits
#   set.seed(seed); Mclust(x, G, model)
# exactly as the original STAGATE's mclust_R does, and writes <name>.<model>.G<G>
# .seed<seed>.labels.txt and one line per case to reference.csv (loglik, bic with 17
# digits, seconds, mclust version).
suppressMessages(library(mclust))
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args)) args[1] else "tests/data/mclust"
cases <- read.csv(file.path(dir, "cases.csv"), stringsAsFactors = FALSE)
out <- data.frame()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  x <- as.matrix(read.csv(gzfile(file.path(dir, paste0(cs$name, ".csv.gz"))), header = FALSE))
  set.seed(cs$seed)
  t <- system.time(m <- Mclust(x, G = cs$G, modelNames = cs$model, verbose = FALSE))[["elapsed"]]
  writeLines(as.character(m$classification),
             file.path(dir, sprintf("%s.%s.G%d.seed%d.labels.txt", cs$name, cs$model, cs$G,
                                    cs$seed)))
  out <- rbind(out, data.frame(name = cs$name, model = cs$model, G = cs$G, seed = cs$seed,
                               n = nrow(x), d = ncol(x),
                               loglik = sprintf("%.17g", m$loglik),
                               bic = sprintf("%.17g", m$bic), seconds = t,
                               mclust = as.character(packageVersion("mclust")),
                               R = R.version.string))
  cat(cs$name, cs$model, cs$G, "loglik", m$loglik, "seconds", t, "\n")
}
write.csv(out, file.path(dir, "reference.csv"), row.names = FALSE)
