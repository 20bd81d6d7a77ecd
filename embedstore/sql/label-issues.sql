-- Labels the latest `embedstore label-issues` run flags (Cleanlab on out-of-sample probe probabilities),
-- most suspect first: quality is the probability the probe gives the label as written.
WITH run AS (SELECT run_id FROM runs WHERE kind = 'label-issues' ORDER BY started DESC LIMIT 1)
SELECT row_number() OVER (ORDER BY l.quality, l.id, l.finding) AS rank, i.image_id, l.finding, l.given,
       round(l.probability, 4) AS probability, round(l.quality, 4) AS quality, l.image_rank,
       coalesce(s.split, i.split) AS split, i.study_id, i.path
FROM label_issues l JOIN run USING (run_id) JOIN images i USING (id) LEFT JOIN splits s USING (id)
WHERE l.flagged
ORDER BY rank;
