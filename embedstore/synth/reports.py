"""Report text, MeSH terms and the Open-i (ecgen-radiology) XML of a phantom study.

Automatic terms are chosen so that torchxrayvision's substring rule gives back exactly the drawn
labels (checked by `embedstore.synth.labels.labels_from_automatic` in the tests).
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

import numpy as np

ORD = {2: "2nd", 3: "3rd"}

# kind -> (automatic term variants, MeSH major stem, findings sentences, impression phrases)
TEXT: dict[str, tuple] = {
    "cardiomegaly": (["cardiomegaly"], "Cardiomegaly/{sev}",
                     ["The heart is enlarged.", "Cardiomegaly is present.", "The cardiac silhouette is enlarged."],
                     ["Cardiomegaly.", "Enlarged heart."]),
    "emphysema": (["pulmonary emphysema", "emphysema", "emphysemas"], "Emphysema",
                  ["The lungs are hyperexpanded and hyperlucent with flattened hemidiaphragms, consistent with emphysema.",
                   "Emphysematous hyperinflation with flattening of the diaphragm."],
                  ["Emphysema.", "Hyperinflated lungs consistent with emphysema."]),
    "pneumothorax": (["pneumothorax"], "Pneumothorax/apex/{side}",
                     ["There is a {side} apical pneumothorax with a visible pleural line.",
                      "A {side} pneumothorax is present at the apex; no lung markings beyond the pleural edge."],
                     ["{Side} pneumothorax."]),
    "fracture": (["rib fracture", "fracture", "fractures, bone"], "Fractures, Bone/ribs/{side}",
                 ["There is a fracture of the {side} {rib} rib.", "Displaced fracture of the {side} {rib} rib."],
                 ["{Side} {rib} rib fracture."]),
    "effusion": (["pleural effusion", "pleural effusions"], "Pleural Effusion/{side}/{sev}",
                 ["There is a {sev} {side} pleural effusion blunting the costophrenic angle.",
                  "{Sev} {side} pleural effusion with a meniscus at the base."],
                 ["{Sev} {side} pleural effusion."]),
    "nodule": (["nodule", "pulmonary nodule"], "Nodule/lung/{mzone}/{side}",
               ["There is a {mm} mm nodule in the {side} {zone} lung.", "A {mm} mm pulmonary nodule projects over the {side} {zone} lung."],
               ["{Side} {zone} lung nodule.", "Pulmonary nodule, {side} {zone} lung."]),
    "mass": (["mass", "lung mass"], "Mass/lung/{mzone}/{side}",
             ["There is a {cm} cm mass in the {side} {zone} lung.", "A lobulated {cm} cm mass in the {side} {zone} lung."],
             ["{Side} {zone} lung mass.", "Lung mass; CT recommended."]),
    "calcified_granuloma": (["calcified granuloma"], "Calcified Granuloma/lung/{mzone}/{side}",
                            ["Calcified granuloma in the {side} {zone} lung.", "Small calcified granuloma projects over the {side} {zone} lung."],
                            ["Calcified granuloma.", "Old granulomatous disease."]),
    "granuloma": (["granuloma", "granulomatous disease"], "Granulomatous Disease/lung/{side}",
                  ["Small granuloma in the {side} {zone} lung.", "Noncalcified granuloma in the {side} {zone} lung."],
                  ["Granuloma.", "Granulomatous disease."]),
    "lesion": (["lung lesion", "lesion"], "Lung/lesion/{side}",
               ["Cavitary lesion in the {side} {zone} lung.", "There is a thick-walled cavitary lesion in the {side} {zone} lung."],
               ["{Side} {zone} cavitary lung lesion."]),
    "opacity": (["opacity", "lung opacity"], "Opacity/lung/{mzone}/{side}",
                ["Patchy opacity in the {side} {zone} lung.", "Hazy airspace opacity in the {side} {zone} lung."],
                ["{Side} {zone} lung opacity."]),
    "pneumonia": (["pneumonia"], "Pneumonia/{mzone}/{side}",
                  ["Focal consolidation in the {side} {zone} lung with air bronchograms, consistent with pneumonia.",
                   "Dense airspace consolidation in the {side} {zone} lung, compatible with pneumonia."],
                  ["{Side} {zone} pneumonia.", "Pneumonia, {side} {zone} lung."]),
    "infiltration": (["infiltrates", "infiltrate"], "Infiltrate/lung/{side}",
                     ["Streaky interstitial infiltrates in the {side} {zone} lung.", "Patchy streaky infiltrates in the {side} {zone} lung."],
                     ["{Side} infiltrates."]),
    "atelectasis": (["atelectasis", "atelectases", "pulmonary atelectasis", "focal atelectasis"],
                    "Pulmonary Atelectasis/base/{side}",
                    ["{Shape} atelectasis at the {side} lung base.", "{Shape} basilar atelectasis on the {side}."],
                    ["{Side} basilar atelectasis."]),
    "edema": (["pulmonary edema", "edema", "edemas"], "Pulmonary Edema",
              ["Bilateral perihilar haziness consistent with pulmonary edema.", "Perihilar airspace haze in both lungs, compatible with pulmonary edema."],
              ["Pulmonary edema.", "Findings of pulmonary edema."]),
    "fibrosis": (["pulmonary fibrosis", "fibrosis"], "Pulmonary Fibrosis/base/bilateral",
                 ["Bibasilar reticular interstitial markings consistent with fibrosis.", "Coarse reticular pattern in both lung bases compatible with pulmonary fibrosis."],
                 ["Basilar pulmonary fibrosis."]),
    "hernia": (["hiatal hernia", "hernia, hiatal"], "Hernia, Hiatal",
               ["Retrocardiac air-fluid level consistent with a hiatal hernia.", "There is a hiatal hernia with a retrocardiac air-fluid level."],
               ["Hiatal hernia."]),
    "pleural_thickening": (["pleural thickening"], "Pleural Thickening/{mzone}/{side}",
                           ["{Side} {zone} pleural thickening.", "Pleural thickening along the {side} {zone} chest wall."],
                           ["{Side} pleural thickening."]),
}

DEVICE_TEXT = {
    "cvc": ("central venous catheters", "Catheters, Indwelling/{side}",
            "A {side} central venous catheter terminates in the superior vena cava."),
    "ett": ("intubation, intratracheal", "Tube, Inserted/trachea", "Endotracheal tube tip is above the carina."),
    "pacemaker": ("pacemaker, artificial", "Implanted Medical Device/left",
                  "Left chest wall pacemaker with leads projecting over the heart."),
    "sternotomy": ("sternotomy", "Sternotomy", "Median sternotomy wires are present."),
}

INCIDENTAL = {
    "degenerative": ("degenerative change", "Thoracic Vertebrae/degenerative/mild", "Mild degenerative changes of the thoracic spine."),
    "scarring": ("scarring", "Cicatrix/lung/base", "Minimal scarring at the lung bases."),
    "tortuous aorta": ("tortuous aorta", "Aorta/tortuous", "The aorta is tortuous."),
}

NORMAL_FINDINGS = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Heart size and mediastinal contours are within normal limits. Lungs are clear.",
    "Normal cardiomediastinal silhouette. Clear lungs. Bony thorax unremarkable.",
]
NORMAL_IMPRESSION = ["No acute cardiopulmonary abnormality.", "Normal chest.", "No active disease."]
ZONE_MESH = {"upper": "upper lobe", "mid": "middle", "lower": "base"}


def _fill(template: str, p: dict) -> str:
    side = {-1: "right", 1: "left", 0: "bilateral"}[p.get("side", 0)]
    sev = p.get("sev", "mild")
    vals = dict(side=side, Side=side.capitalize(), zone=p.get("zone", "mid"),
                mzone=ZONE_MESH.get(p.get("zone", "mid"), "middle"), sev=sev, Sev=sev.capitalize(),
                rib=ORD.get(p.get("rib", 0), f"{p.get('rib', 0)}th"),
                mm=int(round(p.get("r", 0.03) * 2 * 170)), cm=f"{p.get('r', 0.1) * 2 * 17:.1f}",
                Shape="Wedge-shaped" if p.get("wedge") else "Linear")
    return template.format(**vals)


def describe(rng: np.random.Generator, kinds: dict[str, dict], devices: dict, incidental: str | None,
             normal: bool) -> tuple[list[str], list[str], str, str]:
    """(MeSH major terms, automatic terms, findings text, impression text) for a phantom study."""
    if normal:
        return ["normal"], [], str(rng.choice(NORMAL_FINDINGS)), str(rng.choice(NORMAL_IMPRESSION))
    major, auto, fsent, isent = [], [], [], []
    for name, p in kinds.items():
        terms, mesh, fs, imp = TEXT[name]
        auto.append(str(rng.choice(terms)))
        major.append(_fill(mesh, p))
        fsent.append(_fill(str(rng.choice(fs)), p))
        isent.append(_fill(str(rng.choice(imp)), p))
    if "cardiomegaly" not in kinds:
        fsent.append("Heart size is normal.")
    for dev in [d for d in ("cvc", "ett", "pacemaker", "sternotomy") if d in devices]:
        term, mesh, sentence = DEVICE_TEXT[dev]
        side = {-1: "right", 1: "left"}.get(devices[dev].get("side", -1), "right")
        auto.append(term)
        major.append(mesh.format(side=side))
        fsent.append(sentence.format(side=side))
    if incidental:
        term, mesh, sentence = INCIDENTAL[incidental]
        auto.append(term)
        major.append(mesh)
        fsent.append(sentence)
    if not kinds and not isent:
        isent.append("No acute cardiopulmonary abnormality.")
    return major, auto, " ".join(fsent), " ".join(isent)


def open_i_xml(n: int, major: list[str], automatic: list[str], sections: dict[str, str | None],
               images: list[tuple[str, str]]) -> str:
    """An ecgen-radiology XML document laid out like the real Open-i files."""
    abstract = "".join(
        f'\n         \n            <AbstractText Label="{label}"/>' if not text else
        f'\n         \n            <AbstractText Label="{label}">{escape(text)}</AbstractText>'
        for label, text in sections.items())
    mesh = "".join(f"\n   \n      <major>{escape(t)}</major>" for t in major)
    mesh += "".join(f"\n   \n      <automatic>{escape(t)}</automatic>" for t in automatic)
    parents = "".join(_parent(i + 1, image_id, caption) for i, (image_id, caption) in enumerate(images))
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <articleURL/>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>embedstore synth</publisher>
   <title>embedstore phantom chest X-ray collection</title>
   <note>Synthetic phantom radiographs; findings known by construction.</note>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="embedstore" Status="supplied by publisher">
   
      <Article PubModel="Electronic">
      
         <ArticleTitle>embedstore phantom chest X-ray collection</ArticleTitle>
      
         <Abstract>{abstract}
      
         </Abstract>
      
         <Language>eng</Language>
      
         <PublicationTypeList>
         
            <PublicationType>Radiology Report</PublicationType>
      
         </PublicationTypeList>
   
      </Article>

   </MedlineCitation>
   <MeSH>{mesh}

   </MeSH>{parents}
</eCitation>"""


def _parent(i: int, image_id: str, caption: str) -> str:
    return f"""
   <parentImage id={quoteattr(image_id)}>
      
      
      <figureId>F{i}</figureId>
      
      
      <caption>{escape(caption)}</caption>
      
      
      <panel type="single">
         
         
         <url>/hadoop/storage/radiology/extract/{escape(image_id)}.jpg</url>
         
         
         <imgModality>7</imgModality>
      
      
      </panel>
   
   
   </parentImage>"""
