"""Heavy-atom counts of common CCD components, for the memory forecast's token count.

Why: AF3 gives a ligand, and a non-standard polymer residue, one token per
heavy atom, and those counts live in the wwPDB Chemical Component Dictionary
(CCD). AF3's copy of it takes about 12 s and several GB to load, too much for a
check that exists to run before anything heavy. Without counts, a zinc ion
(one atom) would have to count as a large ligand, and a metalloprotein's few
ions would push the forecast up by whole buckets and refuse runs that fit.

Values are from the wwPDB CCD; ``tests/test_real_af3_forecast.py`` checks each
one against the CCD of the AF3 it is given and checks the token count of a
mixed input against AF3's own featurisation. Codes not listed here fall back to
the upper estimates in :mod:`af3_cpu_patch.host.memory_forecast`.
"""

from __future__ import annotations

# Ligands (``ccdCodes``): all heavy atoms. A standalone ligand keeps its leaving
# atoms; AF3 drops O1 of a glycan, so a glycan counts one token high.
LIGAND_TOKENS = {
    # ions
    "MG": 1, "ZN": 1, "CA": 1, "NA": 1, "K": 1, "CL": 1, "MN": 1, "FE": 1, "FE2": 1, "CU": 1, "CU1": 1,
    "CO": 1, "NI": 1, "CD": 1, "HG": 1, "IOD": 1, "BR": 1, "F": 1, "LI": 1, "SR": 1, "BA": 1, "CS": 1,
    # buffers, cryoprotectants, small anions
    "SO4": 5, "PO4": 5, "NO3": 4, "ACT": 4, "GOL": 6, "EDO": 4, "PEG": 7, "PG4": 13, "PGE": 10, "1PE": 16,
    "DMS": 4, "FMT": 3, "MPD": 8, "TRS": 8, "EPE": 15, "MES": 12, "BME": 4, "IPA": 4, "EOH": 3, "CIT": 13,
    "MLI": 7, "TLA": 10,
    # nucleotides and cofactors
    "ATP": 31, "ADP": 27, "AMP": 23, "ANP": 31, "ACP": 31, "GTP": 32, "GDP": 28, "GNP": 32, "GMP": 20,
    "CTP": 29, "UTP": 29, "TTP": 29, "NAD": 44, "NAI": 44, "NAP": 48, "NDP": 48, "FAD": 53, "FMN": 31,
    "HEM": 43, "HEC": 43, "SAM": 27, "SAH": 26, "COA": 48, "ACO": 51, "PLP": 16, "TPP": 26, "BTN": 16,
    "CLA": 65, "BCL": 66, "SF4": 8, "FES": 4,
    # sugars
    "NAG": 15, "NDG": 15, "MAN": 12, "BMA": 12, "GLC": 12, "BGC": 12, "GAL": 12, "FUC": 11, "SIA": 21,
    "XYP": 10,
}  # fmt: skip

# Modified residues (``ptmType`` / ``modificationType``): heavy atoms less the
# leaving atoms (OXT, OP3), which a residue inside a chain loses to its bonds.
# Selenomethionine (MSE) is the exception: AF3 tokenises it as one residue, like
# methionine (``alphafold3/model/features.py``).
MODIFIED_RESIDUE_TOKENS = {
    # protein
    "SEP": 10, "TPO": 11, "PTR": 16, "MSE": 1, "HYP": 8, "MLY": 11, "M3L": 12, "ALY": 12, "MLZ": 10,
    "CSO": 7, "CSD": 8, "OCS": 8, "NEP": 14, "KCX": 12, "PCA": 8, "CME": 10, "SNC": 8, "FME": 10,
    "CGU": 12, "LLP": 24, "TYS": 16,
    # RNA and DNA
    "PSU": 20, "5MC": 21, "5MU": 21, "1MA": 23, "2MG": 24, "M2G": 25, "7MG": 24, "OMC": 21, "OMG": 24,
    "OMU": 21, "H2U": 20, "6MA": 22, "5CM": 20,
}  # fmt: skip
