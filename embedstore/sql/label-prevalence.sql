-- Images per finding and label value (1 positive, 0 negative, -1 uncertain), with prevalence.
SELECT finding,
       count(*) FILTER (WHERE value = 1)  AS positive,
       count(*) FILTER (WHERE value = 0)  AS negative,
       count(*) FILTER (WHERE value = -1) AS uncertain,
       (SELECT count(*) FROM images) - count(*) FILTER (WHERE value IS NOT NULL) AS missing,
       round(count(*) FILTER (WHERE value = 1) / (SELECT count(*) FROM images), 4) AS prevalence
FROM labels
GROUP BY finding
ORDER BY positive DESC, finding;
