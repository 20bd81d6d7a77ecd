-- Near-duplicate groups of the latest `embedstore duplicates` run, those that cross splits (probable leaks) first:
-- every image of each group with its split, study and best similarity to another study's image.
WITH run AS (SELECT run_id FROM runs WHERE kind = 'duplicates' ORDER BY started DESC LIMIT 1),
     members AS (SELECT g.group_no, g.id FROM duplicate_groups g JOIN run USING (run_id)),
     best AS (SELECT id, max(similarity) AS similarity FROM (
                  SELECT id_a AS id, similarity FROM duplicate_pairs JOIN run USING (run_id)
                  UNION ALL SELECT id_b, similarity FROM duplicate_pairs JOIN run USING (run_id)) GROUP BY id),
     splits_of AS (SELECT m.group_no, count(DISTINCT coalesce(s.split, i.split)) AS splits
                   FROM members m JOIN images i USING (id) LEFT JOIN splits s USING (id) GROUP BY m.group_no)
SELECT m.group_no, o.splits > 1 AS crosses_splits, i.image_id, i.study_id, coalesce(s.split, i.split) AS split,
       coalesce(i.view, i.inferred_view) AS view, round(b.similarity, 4) AS similarity, i.path
FROM members m JOIN images i USING (id) LEFT JOIN splits s USING (id) JOIN splits_of o USING (group_no)
LEFT JOIN best b USING (id)
ORDER BY crosses_splits DESC, m.group_no, i.study_id, i.image_id;
