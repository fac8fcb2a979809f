"""CT numbers of the phantom's tissues, from material physics (:mod:`OpportunisticBMDLib.materials`).

Nothing here knows about any calibration method: each tissue is a composition (ICRU-44/46 via
``materials``), mixed per patient (fat infiltration of muscle, marrow fat, cortical porosity, iodine)
and its HU computed for the patient's beam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import materials as m

# HA content of ICRU-44 cortical bone, from its calcium mass fraction (22.5 %) and the Ca mass fraction
# of stoichiometric hydroxyapatite Ca10(PO4)6(OH)2 (39.9 %): 1.92 g/cm3 x 0.225 / 0.399 ~ 1083 mg/cm3.
CORTICAL_HA_MG_CM3 = (
    m.MATERIALS["cortical_bone"].density_g_cm3 * 1000.0 * m.MATERIALS["cortical_bone"].fractions["Ca"]
    / m.MATERIALS["hydroxyapatite"].fractions["Ca"]
)

# ICRU-44 cartilage (intervertebral discs, joint cartilage), 1.10 g/cm3.
CARTILAGE = m.Material(
    "cartilage", {"H": 9.6, "C": 9.9, "N": 2.2, "O": 74.4, "Na": 0.5, "P": 2.2, "S": 0.9, "Cl": 0.3}, 1.10
)
# Carbon-fibre / foam patient table: mostly foam (about -900 HU) between thin carbon skins.
TABLE_SKIN = m.Material("carbon_fibre", {"C": 0.9, "H": 0.05, "O": 0.05}, 1.6)


@dataclass
class TissueHU:
    """HU of every painted tissue for one patient and beam, plus the exact trabecular line."""

    beam: m.Beam
    marrow_fat_fraction: float
    hu: dict[str, float] = field(default_factory=dict)
    trab_hu0: float = 0.0  # HU of trabecular bone at 0 mg/cm3 HA (pure marrow, with contrast if any)
    trab_slope: float = 0.0  # HU per mg/cm3 HA (exactly linear: volume mixing)
    femur_trab_hu0: float = 0.0
    femur_trab_slope: float = 0.0
    cortical_density_mg_cm3: float = CORTICAL_HA_MG_CM3

    def trabecular_hu(self, ha_mg_cm3):
        return self.trab_hu0 + self.trab_slope * ha_mg_cm3

    def femur_trabecular_hu(self, ha_mg_cm3):
        return self.femur_trab_hu0 + self.femur_trab_slope * ha_mg_cm3


def _line(beam: m.Beam, marrow_fat: float, iodine_mg_ml: float) -> tuple[float, float]:
    def hu_at(ha: float) -> float:
        mat = m.trabecular_bone(ha, marrow_fat)
        if iodine_mg_ml > 0:
            mat = m.iodinated(mat, iodine_mg_ml)
        return m.hu(mat, beam)

    h0, h200 = hu_at(0.0), hu_at(200.0)
    return h0, (h200 - h0) / 200.0


def tissue_table(beam: m.Beam, *, marrow_fat_fraction: float, femur_marrow_fat_fraction: float,
                 muscle_fat: dict[str, float], cortical_porosity: float, iodine_mg_ml: dict[str, float],
                 overrides: dict[str, float] | None = None) -> TissueHU:
    """HU per tissue name. ``muscle_fat`` maps muscle groups ("psoas", "paraspinal", "other_muscle") to
    their adipose volume fraction (fat infiltration); ``iodine_mg_ml`` maps tissues to contrast uptake."""
    iodine = dict(iodine_mg_ml)

    def h(material, tissue: str) -> float:
        io = iodine.get(tissue, 0.0)
        mat = m.get_material(material)
        if io > 0:
            mat = m.iodinated(mat, io)
        return m.hu(mat, beam)

    marrow = m.mix({"yellow_marrow": marrow_fat_fraction, "red_marrow": 1 - marrow_fat_fraction})
    cortical = m.mix({"cortical_bone": 1 - cortical_porosity, marrow: cortical_porosity}) if cortical_porosity > 0 \
        else m.MATERIALS["cortical_bone"]
    table = TissueHU(beam=beam, marrow_fat_fraction=marrow_fat_fraction)
    hu = table.hu
    hu["air"] = m.hu("air", beam)
    hu["skin"] = h("skin", "skin")
    hu["fat"] = h("adipose", "fat")
    for group, fat in muscle_fat.items():
        hu[group] = h(m.mix({"muscle": 1 - fat, "adipose": fat}), group)
    hu["muscle"] = h("muscle", "muscle")
    hu["liver"] = h("liver", "liver")
    hu["spleen"] = h("spleen", "spleen")
    hu["kidney"] = h("kidney", "kidney")
    hu["renal_sinus"] = h("adipose", "renal_sinus")
    hu["blood_artery"] = h("blood", "blood_artery")
    hu["blood_vein"] = h("blood", "blood_vein")
    hu["bowel_wall"] = h("muscle", "bowel_wall")
    hu["bowel_fluid"] = h(m.mix({"water": 0.9, "adipose": 0.1}), "bowel_fluid")
    hu["stool"] = h(m.mix({"water": 0.6, "adipose": 0.3, "air": 0.1}), "stool")
    hu["urine"] = h("water", "urine")
    hu["csf"] = h("water", "csf")
    hu["cartilage"] = h(CARTILAGE, "cartilage")
    hu["lung"] = h(m.mix({"air": 0.82, "blood": 0.18}), "lung")  # inflated lung ~ -850 HU
    hu["cortical"] = h(cortical, "cortical")
    hu["yellow_marrow"] = h("yellow_marrow", "yellow_marrow")
    hu["titanium"] = m.hu("titanium", beam)
    hu["cobalt_chrome"] = m.hu("cobalt_chrome", beam)
    hu["table_skin"] = m.hu(TABLE_SKIN, beam)
    hu["table_foam"] = m.hu(m.mix({"air": 0.93, TABLE_SKIN: 0.07}), beam)
    table.cortical_density_mg_cm3 = CORTICAL_HA_MG_CM3 * (1 - cortical_porosity)
    table.trab_hu0, table.trab_slope = _line(beam, marrow_fat_fraction, iodine.get("marrow", 0.0))
    table.femur_trab_hu0, table.femur_trab_slope = _line(beam, femur_marrow_fat_fraction, iodine.get("marrow", 0.0))
    for name, value in (overrides or {}).items():
        hu[name] = float(value)
    return table
