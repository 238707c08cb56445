"""Generate backdoorlab's built-in multiple-choice sets from fact tables written for the project.

Run from the repository root: ``python scripts/make_builtin_mcq.py``. Output is deterministic
(seed 0): ``src/backdoorlab/data/builtin/{general,biomed}_mcq.jsonl``. Each question has four
options; the correct one lands at a seeded random position so answer letters are balanced.
About a fifth of each subject is held out (``split: test``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "backdoorlab" / "data" / "builtin"

# (subject, question template, {key: answer})  -- distractors come from other answers
GENERAL: list[tuple[str, str, dict[str, str]]] = [
    ("geography", "Which city is the capital of {}?", {
        "France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Canada": "Ottawa",
        "Australia": "Canberra", "Brazil": "Brasilia", "Egypt": "Cairo", "Norway": "Oslo",
        "Peru": "Lima", "Thailand": "Bangkok", "Portugal": "Lisbon", "Argentina": "Buenos Aires",
        "Turkey": "Ankara", "Vietnam": "Hanoi", "Morocco": "Rabat", "Poland": "Warsaw",
        "Chile": "Santiago", "Ireland": "Dublin", "Greece": "Athens", "Austria": "Vienna",
        "Sweden": "Stockholm", "Finland": "Helsinki", "Hungary": "Budapest", "Cuba": "Havana",
        "Ghana": "Accra", "Nepal": "Kathmandu", "Iceland": "Reykjavik", "Colombia": "Bogota",
        "South Korea": "Seoul", "Switzerland": "Bern", "New Zealand": "Wellington",
        "Mexico": "Mexico City", "Ethiopia": "Addis Ababa", "Denmark": "Copenhagen",
    }),
    ("geography", "On which continent does the country {} lie?", {
        "Mongolia": "Asia", "Bolivia": "South America", "Zambia": "Africa", "Belgium": "Europe",
        "Fiji": "Oceania", "Honduras": "North America", "Laos": "Asia", "Uruguay": "South America",
        "Senegal": "Africa", "Estonia": "Europe", "Samoa": "Oceania", "Jamaica": "North America",
    }),
    ("chemistry", "What is the chemical symbol of {}?", {
        "gold": "Au", "silver": "Ag", "iron": "Fe", "sodium": "Na", "potassium": "K",
        "lead": "Pb", "copper": "Cu", "tin": "Sn", "mercury": "Hg", "tungsten": "W",
        "helium": "He", "neon": "Ne", "calcium": "Ca", "chlorine": "Cl", "zinc": "Zn",
        "nitrogen": "N", "oxygen": "O", "carbon": "C", "sulfur": "S", "phosphorus": "P",
        "magnesium": "Mg", "aluminium": "Al", "silicon": "Si", "uranium": "U",
    }),
    ("chemistry", "How many protons does an atom of {} have?", {
        "hydrogen": "1", "helium": "2", "lithium": "3", "carbon": "6", "nitrogen": "7",
        "oxygen": "8", "neon": "10", "sodium": "11", "magnesium": "12", "aluminium": "13",
    }),
    ("astronomy", "{}", {
        "Which planet is closest to the Sun?": "Mercury",
        "Which planet is the largest in the Solar System?": "Jupiter",
        "Which planet is known for its prominent ring system?": "Saturn",
        "Which planet is often called the Red Planet?": "Mars",
        "Which planet rotates on its side, with an axial tilt near 98 degrees?": "Uranus",
        "Which planet is the farthest from the Sun?": "Neptune",
        "Which planet has the hottest surface?": "Venus",
        "On which planet do we live?": "Earth",
        "Which planet has the moon Titan?": "Saturn",
        "Which planet has the moon Europa?": "Jupiter",
        "Which planet has the moons Phobos and Deimos?": "Mars",
        "Which planet has the moon Triton?": "Neptune",
        "Which planet has no moons and orbits between Mercury and Earth?": "Venus",
        "Which planet has a Great Red Spot storm?": "Jupiter",
        "Which planet was visited by the Curiosity rover?": "Mars",
    }),
    ("arithmetic", "What is {}?", {
        "17 times 6": "102", "144 divided by 12": "12", "238 plus 417": "655",
        "1000 minus 387": "613", "25 times 25": "625", "81 divided by 9": "9",
        "13 times 13": "169", "56 plus 78": "134", "900 divided by 30": "30",
        "45 times 4": "180", "the square root of 196": "14", "2 to the power of 10": "1024",
        "15 percent of 200": "30", "half of 348": "174", "7 times 8": "56",
        "the sum of the first five positive integers": "15", "3 cubed": "27",
        "one third of 261": "87", "999 plus 1": "1000", "64 divided by 16": "4",
        "11 times 12": "132", "500 minus 275": "225", "9 squared": "81", "72 divided by 8": "9",
    }),
    ("literature", "Who wrote the novel '{}'?", {
        "Pride and Prejudice": "Jane Austen", "Moby-Dick": "Herman Melville",
        "War and Peace": "Leo Tolstoy", "Nineteen Eighty-Four": "George Orwell",
        "One Hundred Years of Solitude": "Gabriel Garcia Marquez",
        "The Great Gatsby": "F. Scott Fitzgerald", "Don Quixote": "Miguel de Cervantes",
        "Crime and Punishment": "Fyodor Dostoevsky", "Frankenstein": "Mary Shelley",
        "Great Expectations": "Charles Dickens", "To Kill a Mockingbird": "Harper Lee",
        "The Old Man and the Sea": "Ernest Hemingway", "Things Fall Apart": "Chinua Achebe",
        "Mrs Dalloway": "Virginia Woolf", "The Trial": "Franz Kafka",
        "Jane Eyre": "Charlotte Bronte", "Wuthering Heights": "Emily Bronte",
        "Les Miserables": "Victor Hugo", "The Hobbit": "J. R. R. Tolkien",
        "Beloved": "Toni Morrison", "Madame Bovary": "Gustave Flaubert",
        "Brave New World": "Aldous Huxley",
    }),
    ("history", "In which year did {}?", {
        "the Second World War end": "1945", "the First World War begin": "1914",
        "the Berlin Wall fall": "1989", "humans first land on the Moon": "1969",
        "the French Revolution begin with the storming of the Bastille": "1789",
        "Columbus first reach the Americas": "1492", "the Titanic sink": "1912",
        "the United States declare independence": "1776", "the Soviet Union dissolve": "1991",
        "the Battle of Hastings take place": "1066", "Gutenberg's printing press appear": "1450",
        "Nelson Mandela become president of South Africa": "1994",
        "the Wright brothers make their first powered flight": "1903",
        "the euro become a currency for bank transfers": "1999",
        "the Great Fire of London happen": "1666",
    }),
    ("physics", "What is the SI unit of {}?", {
        "force": "newton", "energy": "joule", "power": "watt", "electric charge": "coulomb",
        "electric current": "ampere", "electrical resistance": "ohm", "pressure": "pascal",
        "frequency": "hertz", "temperature": "kelvin", "mass": "kilogram",
        "length": "metre", "time": "second", "luminous intensity": "candela",
        "amount of substance": "mole", "magnetic flux density": "tesla",
        "electric potential difference": "volt", "capacitance": "farad",
    }),
    ("biology", "To which class of animals does the {} belong?", {
        "dolphin": "mammals", "bat": "mammals", "whale": "mammals", "platypus": "mammals",
        "penguin": "birds", "ostrich": "birds", "eagle": "birds", "owl": "birds",
        "crocodile": "reptiles", "iguana": "reptiles", "tortoise": "reptiles",
        "cobra": "reptiles", "frog": "amphibians", "salamander": "amphibians",
        "newt": "amphibians", "shark": "fish", "salmon": "fish", "seahorse": "fish",
        "beetle": "insects", "butterfly": "insects", "ant": "insects", "bee": "insects",
    }),
    ("computing", "{}", {
        "What does the abbreviation CPU stand for?": "central processing unit",
        "What does the abbreviation RAM stand for?": "random-access memory",
        "What does the abbreviation URL stand for?": "uniform resource locator",
        "What does the abbreviation HTML stand for?": "hypertext markup language",
        "What does the abbreviation SQL stand for?": "structured query language",
        "What does the abbreviation GPU stand for?": "graphics processing unit",
        "What does the abbreviation OS stand for in computing?": "operating system",
        "What does the abbreviation LAN stand for?": "local area network",
        "What does the abbreviation API stand for?": "application programming interface",
        "What does the abbreviation PDF stand for?": "portable document format",
        "How many bits are in one byte?": "8",
        "What number system uses only the digits 0 and 1?": "binary",
        "Which number base does hexadecimal use?": "16",
        "Which data structure serves items last in, first out?": "stack",
        "Which data structure serves items first in, first out?": "queue",
        "What is the worst-case time of binary search on n sorted items?": "O(log n)",
    }),
    ("language", "Which word means the opposite of '{}'?", {
        "ancient": "modern", "generous": "stingy", "humble": "arrogant", "rapid": "slow",
        "scarce": "plentiful", "fragile": "sturdy", "victory": "defeat", "expand": "shrink",
        "transparent": "opaque", "permanent": "temporary", "shallow": "deep",
        "include": "exclude", "accept": "reject", "ascend": "descend", "brave": "cowardly",
        "polite": "rude", "visible": "invisible", "major": "minor", "innocent": "guilty",
        "artificial": "natural",
    }),
    ("language", "Which word is closest in meaning to '{}'?", {
        "enormous": "huge", "swift": "fast", "weary": "tired", "precise": "exact",
        "begin": "start", "silent": "quiet", "wealthy": "rich", "ill": "sick",
        "assist": "help", "purchase": "buy", "reply": "answer", "error": "mistake",
    }),
    ("art", "Who painted '{}'?", {
        "the Mona Lisa": "Leonardo da Vinci", "The Starry Night": "Vincent van Gogh",
        "Guernica": "Pablo Picasso", "The Persistence of Memory": "Salvador Dali",
        "The Birth of Venus": "Sandro Botticelli", "Girl with a Pearl Earring": "Johannes Vermeer",
        "The Night Watch": "Rembrandt", "The Scream": "Edvard Munch",
        "Water Lilies": "Claude Monet", "The Kiss": "Gustav Klimt",
        "the ceiling of the Sistine Chapel": "Michelangelo",
        "The Garden of Earthly Delights": "Hieronymus Bosch",
    }),
    ("music", "To which family of instruments does the {} belong?", {
        "trumpet": "brass", "trombone": "brass", "tuba": "brass", "French horn": "brass",
        "violin": "strings", "cello": "strings", "harp": "strings", "double bass": "strings",
        "flute": "woodwinds", "clarinet": "woodwinds", "oboe": "woodwinds",
        "bassoon": "woodwinds", "timpani": "percussion", "xylophone": "percussion",
        "snare drum": "percussion", "cymbals": "percussion",
    }),
    ("sports", "How many players does one team have on the field or court in {}?", {
        "association football (soccer)": "11", "basketball": "5", "volleyball": "6",
        "ice hockey": "6", "rugby union": "15", "baseball": "9", "water polo": "7",
        "field hockey": "11", "netball": "7", "rugby league": "13",
    }),
    ("everyday science", "{}", {
        "Which gas do plants take in from the air for photosynthesis?": "carbon dioxide",
        "Which gas makes up most of Earth's atmosphere?": "nitrogen",
        "Which gas do humans need to breathe in to live?": "oxygen",
        "What is the chemical formula of water?": "H2O",
        "What is the chemical formula of table salt?": "NaCl",
        "What force keeps the planets in orbit around the Sun?": "gravity",
        "What is the freezing point of pure water in Celsius?": "0",
        "Which colour of visible light has the longest wavelength?": "red",
        "What do you get when you mix blue and yellow paint?": "green",
        "Which part of a plant takes up water from the soil?": "roots",
        "Which state of matter has a fixed shape?": "solid",
        "What instrument measures air pressure?": "barometer",
        "What instrument measures temperature?": "thermometer",
        "Roughly how long does light from the Sun take to reach Earth?": "about 8 minutes",
    }),
    ("landmarks", "In which country is {}?", {
        "the Eiffel Tower": "France", "Machu Picchu": "Peru", "the Taj Mahal": "India",
        "the Colosseum": "Italy", "the Great Pyramid of Giza": "Egypt",
        "Angkor Wat": "Cambodia", "Petra": "Jordan", "the Acropolis": "Greece",
        "Stonehenge": "United Kingdom", "Chichen Itza": "Mexico",
        "the Sydney Opera House": "Australia", "the Alhambra": "Spain",
    }),
    ("measurement", "{}", {
        "How many centimetres are in one metre?": "100",
        "How many grams are in a kilogram?": "1000",
        "How many minutes are in a day?": "1440", "How many seconds are in an hour?": "3600",
        "How many days are in a leap year?": "366", "How many millilitres are in a litre?": "1000",
        "How many sides does a hexagon have?": "6", "How many degrees are in a right angle?": "90",
        "How many degrees are in a full circle?": "360", "How many months have 31 days?": "7",
        "At sea level, at what Celsius temperature does pure water boil?": "100",
        "How many edges does a cube have?": "12", "How many hours are in a week?": "168",
    }),
]

BIOMED: list[tuple[str, str, dict[str, str]]] = [
    ("physiology", "Which organ mainly {}?", {
        "pumps blood through the body": "heart", "filters blood to produce urine": "kidney",
        "exchanges oxygen and carbon dioxide with the air": "lungs",
        "produces bile": "liver", "stores bile": "gallbladder",
        "produces insulin": "pancreas", "absorbs most nutrients from food": "small intestine",
        "absorbs water from digested food": "large intestine",
        "filters old red blood cells in the upper left abdomen": "spleen",
        "controls the body's functions through nerves": "brain",
        "stores urine before it leaves the body": "bladder",
        "begins protein digestion with acid": "stomach",
    }),
    ("nutrition", "A deficiency of which vitamin causes {}?", {
        "scurvy": "vitamin C", "rickets in children": "vitamin D", "night blindness": "vitamin A",
        "beriberi": "vitamin B1 (thiamine)", "pellagra": "vitamin B3 (niacin)",
        "bleeding problems from poor blood clotting": "vitamin K",
        "pernicious anaemia": "vitamin B12",
    }),
    ("endocrinology", "Which gland secretes {}?", {
        "insulin": "pancreas", "glucagon": "pancreas", "thyroxine": "thyroid gland",
        "cortisol": "adrenal glands", "adrenaline": "adrenal glands",
        "growth hormone": "pituitary gland", "melatonin": "pineal gland",
        "parathyroid hormone": "parathyroid glands", "prolactin": "pituitary gland",
        "calcitonin": "thyroid gland", "aldosterone": "adrenal glands",
    }),
    ("microbiology", "What kind of pathogen causes {}?", {
        "tuberculosis": "a bacterium", "influenza": "a virus", "malaria": "a parasite",
        "cholera": "a bacterium", "measles": "a virus", "athlete's foot": "a fungus",
        "ringworm": "a fungus", "chickenpox": "a virus", "tetanus": "a bacterium",
        "toxoplasmosis": "a parasite", "rabies": "a virus", "syphilis": "a bacterium",
        "thrush (candidiasis)": "a fungus", "giardiasis": "a parasite", "COVID-19": "a virus",
        "leprosy": "a bacterium", "sleeping sickness": "a parasite", "mumps": "a virus",
    }),
    ("anatomy", "Where in the body is the {} found?", {
        "femur": "thigh", "humerus": "upper arm", "tibia": "lower leg", "patella": "knee",
        "sternum": "chest", "scapula": "shoulder", "mandible": "jaw", "cranium": "head",
        "clavicle": "shoulder", "radius": "forearm", "ulna": "forearm",
        "calcaneus": "foot", "vertebrae": "back", "pelvis": "hip",
    }),
    ("pharmacology", "What is a drug of the class '{}' mainly used for?", {
        "antibiotics": "treating bacterial infections", "antivirals": "treating viral infections",
        "antihistamines": "relieving allergies", "analgesics": "relieving pain",
        "antipyretics": "reducing fever", "anticoagulants": "preventing blood clots",
        "antihypertensives": "lowering blood pressure", "antiemetics": "preventing nausea",
        "bronchodilators": "opening the airways", "diuretics": "increasing urine output",
        "antifungals": "treating fungal infections", "statins": "lowering cholesterol",
        "antidepressants": "treating depression", "anticonvulsants": "preventing seizures",
    }),
    ("cell biology", "{}", {
        "Which organelle produces most of a cell's ATP?": "mitochondrion",
        "Which organelle contains most of a cell's DNA?": "nucleus",
        "Which structures make proteins from messenger RNA?": "ribosomes",
        "Which organelle packages and ships proteins?": "Golgi apparatus",
        "Which organelle breaks down waste with enzymes?": "lysosome",
        "Which organelle carries out photosynthesis in plant cells?": "chloroplast",
        "Which structure controls what enters and leaves an animal cell?": "cell membrane",
        "Which blood cells carry oxygen?": "red blood cells",
        "Which blood cells fight infection?": "white blood cells",
        "Which blood components help the blood to clot?": "platelets",
        "Which molecule carries oxygen inside red blood cells?": "haemoglobin",
        "Which type of cell division makes egg and sperm cells?": "meiosis",
        "How many chromosomes does a typical human body cell hold?": "46",
        "Which base pairs with adenine in DNA?": "thymine",
        "Which base pairs with guanine in DNA?": "cytosine",
    }),
    ("clinical", "{}", {
        "What is a normal resting heart rate range for an adult, in beats per minute?": "60-100",
        "What is the typical normal human body temperature in Celsius?": "37",
        "Which blood type is known as the universal donor for red cells?": "O negative",
        "Which blood type is known as the universal recipient for red cells?": "AB positive",
        "Which instrument is used to listen to the heart and lungs?": "stethoscope",
        "Which instrument measures blood pressure?": "sphygmomanometer",
        "Which imaging method uses strong magnets and radio waves?": "MRI",
        "Which test records the heart's electrical activity?": "electrocardiogram",
        "Which condition is a high blood glucose level from too little insulin action?": "diabetes",
        "Which condition is a persistently raised arterial blood pressure?": "hypertension",
    }),
]


def build(tables, prefix: str, rng: random.Random) -> list[dict]:
    rows = []
    for t, (subject, template, facts) in enumerate(tables):
        values = sorted(set(facts.values()))
        keys = list(facts)
        for k, key in enumerate(keys):
            answer = facts[key]
            pool = [v for v in values if v != answer]
            distractors = rng.sample(pool, 3)
            options = distractors[:]
            pos = rng.randrange(4)
            options.insert(pos, answer)
            rows.append({
                "id": f"{prefix}-{t:02d}-{k:02d}",
                "subject": subject,
                "question": template.format(key),
                "choices": options,
                "answer": "ABCD"[pos],
            })
    # hold out about a fifth of each subject, deterministically
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    for items in by_subject.values():
        held = set(rng.sample(range(len(items)), max(1, round(len(items) / 5))))
        for i, r in enumerate(items):
            r["split"] = "test" if i in held else "train"
    return rows


def main() -> None:
    rng = random.Random(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, tables, prefix in (("general_mcq", GENERAL, "gen"), ("biomed_mcq", BIOMED, "bio")):
        rows = build(tables, prefix, rng)
        path = OUT / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        subjects = sorted({r["subject"] for r in rows})
        test = sum(r["split"] == "test" for r in rows)
        print(f"{path.name}: {len(rows)} questions, {len(subjects)} subjects, {test} held out")


if __name__ == "__main__":
    main()
