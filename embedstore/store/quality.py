"""Data-set quality: images' metadata for the checks, inferred views, view coverage, merged split
groups, and the rows of `duplicates` and `label-issues` runs."""

from __future__ import annotations

from embedstore.store.images import GROUP_SQL
from embedstore.store.rows import first, registered

# Where an image's view comes from, as `splits` and the report count it.
VIEW_SOURCE_SQL = """CASE WHEN i.view IS NOT NULL AND i.view_source = 'file' THEN 'given'
                          WHEN i.view IS NOT NULL THEN 'known'
                          WHEN i.inferred_view IS NOT NULL THEN 'inferred' ELSE 'unknown' END"""
# One row per image with what the checks need: its frozen split and group, study, view and labels.
IMAGE_META_SQL = f"""
    SELECT i.id, i.image_id, i.path, i.study_id, coalesce(s.split, i.split) AS split,
           coalesce(s.group_id, {GROUP_SQL}) AS group_id, i.view, i.view_source, i.inferred_view,
           i.inferred_view_confidence, lab.labels
    FROM images i LEFT JOIN splits s USING (id)
    LEFT JOIN (SELECT id, string_agg(finding, ', ' ORDER BY finding) AS labels FROM labels WHERE value = 1
               GROUP BY id) lab USING (id)"""


class QualityTables:
    """Reads and writes of the data-set quality checks (a part of `Storage`)."""

    def image_meta(self):
        """id, image_id, path, study_id, split, group_id, view, view_source, inferred_view,
        inferred_view_confidence, labels (positive findings, comma-joined; NULL: none) of every image, by id."""
        return self._df(f"{IMAGE_META_SQL} ORDER BY i.id")

    def write_inferred_views(self, frame) -> int:
        """Replace every inferred view by `frame`'s (id, inferred_view, inferred_view_confidence),
        only on images whose view is unknown: a known or given view is never overwritten."""
        new = frame.select("id", "inferred_view", "inferred_view_confidence")
        with self.transaction() as con, registered(con, new_views=new):
            con.execute("UPDATE images SET inferred_view = NULL, inferred_view_confidence = NULL")
            con.execute("""UPDATE images SET inferred_view = n.inferred_view,
                               inferred_view_confidence = n.inferred_view_confidence
                           FROM new_views n WHERE images.id = n.id AND images.view IS NULL""")
            return first(con.sql("SELECT count(*) FROM images WHERE inferred_view IS NOT NULL"))[0]

    def view_coverage(self):
        """split ('none' when unsplit), source (known / given / inferred / unknown), view (the
        given, known or inferred one; 'unknown'), images."""
        return self._df(f"""SELECT coalesce(s.split, i.split, 'none') AS split, {VIEW_SOURCE_SQL} AS source,
                                   coalesce(i.view, i.inferred_view, 'unknown') AS view, count(*) AS images
                            FROM images i LEFT JOIN splits s USING (id) GROUP BY ALL ORDER BY ALL""")

    def merge_split_groups(self, frame) -> int:
        """Set `splits.group_id` of the images in `frame` (id, group_id) to the merged group; the
        splits themselves stay frozen. Returns the number of images whose group changed."""
        with self.transaction() as con, registered(con, merged_groups=frame.select("id", "group_id")):
            changed = first(con.sql("""SELECT count(*) FROM splits s JOIN merged_groups m USING (id)
                                       WHERE s.group_id <> m.group_id"""))[0]
            con.execute("UPDATE splits SET group_id = m.group_id FROM merged_groups m WHERE splits.id = m.id")
        return int(changed)

    def duplicate_pairs(self, run_id: str):
        """A duplicates run's pairs beside both images' metadata: group_no, similarity, then
        image_id, study_id, split, view, labels and path of each side (_a, _b)."""
        side = "{s}.image_id AS image_id_{s}, {s}.study_id AS study_{s}, {s}.split AS split_{s}, " \
               "{s}.view AS view_{s}, {s}.labels AS labels_{s}, {s}.path AS path_{s}"
        return self._df(f"""WITH m AS ({IMAGE_META_SQL}), g AS (SELECT id, group_no FROM duplicate_groups WHERE run_id = ?)
            SELECT g.group_no, p.similarity, p.id_a, p.id_b, {side.format(s='a')}, {side.format(s='b')}
            FROM duplicate_pairs p JOIN m a ON a.id = p.id_a JOIN m b ON b.id = p.id_b LEFT JOIN g ON g.id = p.id_a
            WHERE p.run_id = ? ORDER BY g.group_no, p.similarity DESC""", [run_id, run_id])

    def label_issue_rows(self, run_id: str, flagged_only: bool = True):
        """A label-issues run's (image, finding) rows beside the image: image_rank, image_id,
        finding, given, probability, quality, flagged, image_quality, fold, split, study_id, path."""
        where = " AND li.flagged" if flagged_only else ""
        return self._df(f"""SELECT li.image_rank, i.image_id, li.finding, li.given, li.probability, li.quality,
                                   li.flagged, li.image_quality, li.fold, coalesce(s.split, i.split) AS split,
                                   i.study_id, i.path, li.id
                            FROM label_issues li JOIN images i USING (id) LEFT JOIN splits s USING (id)
                            WHERE li.run_id = ?{where} ORDER BY li.quality, li.id, li.finding""", [run_id])
