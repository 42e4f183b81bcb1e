#!/usr/bin/env python3
"""Generate data_samples/multiple_choice.jsonl: a small k-shot multiple-choice benchmark written for posttrain.

Ten subjects of 35 questions each: the first 5 of every subject are the dev split (the shots), the other 30
are scored. Every question has exactly one right answer among 4 choices. Arithmetic, unit conversions,
number facts of the calendar and capital/continent/element look-ups are computed from the tables below;
the other subjects are written by hand with their distractors. Distractors are other answers of the same
kind, never an answer that is also right (see AVOID). Output is deterministic (fixed seed).

Run:  python3 data_samples/make_multiple_choice.py
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 2026
PER_SUBJECT, DEV = 35, 5

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Mexico": "Mexico City", "India": "New Delhi", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest",
    "Ireland": "Dublin", "Turkey": "Ankara", "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul",
    "Peru": "Lima", "Chile": "Santiago", "Colombia": "Bogota", "Cuba": "Havana", "Iran": "Tehran",
    "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa",
    "Ukraine": "Kyiv", "Czech Republic": "Prague", "Romania": "Bucharest", "New Zealand": "Wellington",
}

CONTINENTS = {  # no country that spans two continents
    "Africa": ["Nigeria", "Ghana", "Ethiopia", "Morocco", "Kenya", "Tanzania", "Angola", "Senegal"],
    "South America": ["Argentina", "Chile", "Peru", "Colombia", "Bolivia", "Uruguay", "Paraguay", "Ecuador"],
    "North America": ["Canada", "Mexico", "Cuba", "Guatemala", "Honduras", "Jamaica", "the United States"],
    "Asia": ["Japan", "India", "Thailand", "Vietnam", "Nepal", "Mongolia", "Bangladesh", "Malaysia"],
    "Europe": ["Norway", "Poland", "Spain", "Italy", "Ireland", "Portugal", "Austria", "Greece"],
    "Oceania": ["New Zealand", "Fiji", "Papua New Guinea", "Samoa"],
}

ELEMENTS = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "carbon": "C", "nitrogen": "N", "oxygen": "O",
    "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg", "aluminium": "Al", "silicon": "Si",
    "phosphorus": "P", "sulfur": "S", "chlorine": "Cl", "argon": "Ar", "potassium": "K", "calcium": "Ca",
    "iron": "Fe", "copper": "Cu", "zinc": "Zn", "silver": "Ag", "tin": "Sn", "gold": "Au", "mercury": "Hg",
    "lead": "Pb", "uranium": "U", "nickel": "Ni", "iodine": "I", "platinum": "Pt", "cobalt": "Co",
    "titanium": "Ti", "tungsten": "W", "bromine": "Br", "boron": "B", "krypton": "Kr", "xenon": "Xe",
}

MEANINGS = {  # one word per meaning, so no distractor is also right
    "enormous": "very large", "tiny": "very small", "ancient": "very old", "brave": "not afraid of danger",
    "fragile": "easily broken", "generous": "happy to give to others", "silent": "making no sound",
    "rapid": "very fast", "damp": "slightly wet", "furious": "extremely angry", "timid": "shy and easily frightened",
    "weary": "very tired", "vacant": "empty, with no one in it", "arid": "very dry, with little rain",
    "transparent": "clear enough to see through", "famished": "extremely hungry", "frigid": "extremely cold",
    "delighted": "very pleased", "reluctant": "unwilling to do something", "abundant": "existing in large amounts",
    "obsolete": "no longer in use", "fluent": "able to speak a language easily", "hostile": "unfriendly and aggressive",
    "punctual": "arriving on time", "fragrant": "having a pleasant smell", "invisible": "impossible to see",
    "legible": "clear enough to read", "nocturnal": "active at night", "edible": "safe to eat",
    "loyal": "faithful to a person or cause", "cautious": "careful to avoid risks", "hilarious": "extremely funny",
    "wealthy": "having a lot of money", "gloomy": "dark and sad", "precise": "exact and accurate",
    "anxious": "worried and nervous", "humble": "modest, not proud", "feeble": "physically weak",
}

OPPOSITES = {
    "hot": "cold", "happy": "sad", "fast": "slow", "heavy": "light", "full": "empty", "rich": "poor",
    "early": "late", "young": "old", "wet": "dry", "hard": "soft", "loud": "quiet", "wide": "narrow",
    "deep": "shallow", "strong": "weak", "clean": "dirty", "push": "pull", "buy": "sell", "win": "lose",
    "above": "below", "inside": "outside", "arrive": "depart", "remember": "forget", "accept": "refuse",
    "ancient": "modern", "cheap": "expensive", "victory": "defeat", "friend": "enemy", "question": "answer",
    "north": "south", "east": "west", "entrance": "exit", "smooth": "rough", "sharp": "blunt", "tall": "short",
    "true": "false", "always": "never", "maximum": "minimum", "asleep": "awake",
}
AVOID = {  # (word, distractor) pairs where the distractor is arguably right too
    ("loud", "soft"), ("hard", "quiet"), ("heavy", "soft"), ("fast", "late"), ("early", "slow"), ("sharp", "smooth"),
    ("smooth", "blunt"), ("strong", "soft"), ("ancient", "old"), ("young", "modern"), ("wide", "shallow"),
    ("deep", "narrow"), ("above", "south"), ("north", "below"), ("tall", "below"), ("hard", "light"),
    ("heavy", "weak"), ("strong", "light"), ("entrance", "outside"), ("inside", "exit"), ("win", "defeat"),
    ("victory", "lose"), ("push", "refuse"), ("true", "never"), ("always", "false"), ("buy", "lose"), ("rich", "sad"),
}

ANIMALS = [  # (question, answer, kind): distractors are other answers of the same kind
    *[(f"What is a baby {a} called?", b, "baby") for a, b in [
        ("dog", "a puppy"), ("cat", "a kitten"), ("cow", "a calf"), ("sheep", "a lamb"), ("horse", "a foal"),
        ("frog", "a tadpole"), ("kangaroo", "a joey"), ("goat", "a kid"), ("duck", "a duckling"), ("bear", "a cub"),
        ("swan", "a cygnet"), ("owl", "an owlet"), ("deer", "a fawn"), ("pig", "a piglet"), ("hen", "a chick")]],
    *[(f"What is a group of {a} called?", b, "group") for a, b in [
        ("wolves", "a pack"), ("cows", "a herd"), ("lions", "a pride"), ("birds", "a flock"), ("geese", "a gaggle"),
        ("ants", "a colony"), ("fish", "a school")]],
    *[(f"What sound does a {a} make?", b, "sound") for a, b in [
        ("dog", "it barks"), ("cat", "it meows"), ("cow", "it moos"), ("lion", "it roars"), ("snake", "it hisses"),
        ("duck", "it quacks"), ("horse", "it neighs"), ("pig", "it oinks"), ("owl", "it hoots")]],
    *[(f"How many legs does {a} have?", b, "legs") for a, b in [
        ("a spider", "eight"), ("an insect", "six"), ("a dog", "four"), ("a chicken", "two")]],
]
LEG_COUNTS = ["two", "four", "six", "eight", "ten"]

SCIENCE = [  # (question, answer, three distractors)
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Jupiter"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Saturn", "Neptune"]),
    ("What is the largest planet in our solar system?", "Jupiter", ["Earth", "Mars", "Mercury"]),
    ("Which planet has the best-known rings?", "Saturn", ["Mercury", "Mars", "Venus"]),
    ("How many planets are in our solar system?", "eight", ["seven", "ten", "twelve"]),
    ("What gas do plants take in from the air to make their food?", "carbon dioxide", ["oxygen", "helium", "neon"]),
    ("What gas must people breathe in to stay alive?", "oxygen", ["helium", "neon", "carbon monoxide"]),
    ("What is the main gas in the air we breathe?", "nitrogen", ["oxygen", "carbon dioxide", "hydrogen"]),
    ("At what temperature in degrees Celsius does pure water freeze?", "0", ["10", "50", "100"]),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100", ["0", "50", "200"]),
    ("What is the hardest natural substance?", "diamond", ["gold", "iron", "chalk"]),
    ("What force pulls objects toward the ground?", "gravity", ["magnetism", "friction", "static electricity"]),
    ("How many bones are in the adult human body?", "206", ["106", "306", "512"]),
    ("Which organ pumps blood around the body?", "the heart", ["the liver", "the lungs", "the stomach"]),
    ("Which organs do people breathe with?", "the lungs", ["the kidneys", "the heart", "the liver"]),
    ("What is the largest organ of the human body?", "the skin", ["the heart", "the brain", "the stomach"]),
    ("Which blood cells carry oxygen around the body?", "red blood cells", ["white blood cells", "platelets", "nerve cells"]),
    ("Which sense do the ears give us?", "hearing", ["sight", "smell", "taste"]),
    ("What is the centre of an atom called?", "the nucleus", ["the electron", "the orbit", "the membrane"]),
    ("What is the chemical formula for water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("What is the star at the centre of our solar system?", "the Sun", ["the Moon", "Polaris", "Sirius"]),
    ("What is the Earth's natural satellite called?", "the Moon", ["the Sun", "Mars", "Venus"]),
    ("What do bees collect from flowers to make honey?", "nectar", ["leaves", "bark", "sand"]),
    ("Which part of a plant takes up water from the soil?", "the roots", ["the flowers", "the leaves", "the fruit"]),
    ("What kind of animal is a whale?", "a mammal", ["a fish", "a reptile", "an amphibian"]),
    ("What kind of animal is a frog?", "an amphibian", ["a mammal", "a reptile", "a bird"]),
    ("What kind of animal is a snake?", "a reptile", ["a mammal", "an amphibian", "a fish"]),
    ("Which metal is a liquid at room temperature?", "mercury", ["iron", "copper", "aluminium"]),
    ("What are animals that eat only plants called?", "herbivores", ["carnivores", "omnivores", "predators"]),
    ("What are animals that eat only meat called?", "carnivores", ["herbivores", "omnivores", "decomposers"]),
    ("What is frozen water called?", "ice", ["steam", "vapour", "mist"]),
    ("What is the process by which plants make food from sunlight called?", "photosynthesis",
     ["digestion", "evaporation", "erosion"]),
    ("What is the change from liquid water to water vapour called?", "evaporation", ["condensation", "freezing", "melting"]),
    ("What is a scientist who studies rocks called?", "a geologist", ["a biologist", "an astronomer", "a chemist"]),
    ("About how many hours does the Earth take to spin once on its axis?", "24", ["12", "48", "100"]),
]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS_IN = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
UNITS = [  # (unit, smaller unit, how many of the smaller in one)
    ("metre", "centimetres", 100), ("kilometre", "metres", 1000), ("kilogram", "grams", 1000),
    ("litre", "millilitres", 1000), ("hour", "minutes", 60), ("minute", "seconds", 60), ("day", "hours", 24),
    ("week", "days", 7), ("year", "months", 12), ("foot", "inches", 12), ("yard", "feet", 3),
]
PLURAL = {"foot": "feet"}


def question(subject, text, answer, distractors, rng):
    distractors = list(dict.fromkeys(d for d in distractors if d != answer))[:3]
    assert len(distractors) == 3, (subject, text, distractors)
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return {"question": text, "choices": choices, "answer": choices.index(answer), "subject": subject}


def others(rng, pool, answer, avoid=()):
    return rng.sample([p for p in pool if p != answer and p not in avoid], 3)


def near_numbers(rng, value, spreads=(1, 2, 10, 3, 5)):
    found = []
    for spread in rng.sample(spreads, len(spreads)):
        for candidate in (value + spread, value - spread):
            if candidate > 0 and candidate != value and str(candidate) not in found:
                found.append(str(candidate))
    return rng.sample(found, 3)


def arithmetic(rng):
    rows, seen = [], set()
    while len(rows) < PER_SUBJECT:
        kind = rng.choice("+-x")
        a, b = (rng.randint(2, 12), rng.randint(2, 12)) if kind == "x" else (rng.randint(3, 60), rng.randint(2, 40))
        if kind == "-" and a <= b:
            a, b = b, a
        if kind == "-" and a == b:
            continue
        value = a + b if kind == "+" else a - b if kind == "-" else a * b
        text = f"What is {a} {'plus' if kind == '+' else 'minus' if kind == '-' else 'times'} {b}?"
        if text not in seen:
            seen.add(text)
            rows.append(question("arithmetic", text, str(value), near_numbers(rng, value), rng))
    return rows


def unit_conversion(rng):
    rows, seen = [], set()
    while len(rows) < PER_SUBJECT:
        unit, smaller, factor = rng.choice(UNITS)
        n = rng.randint(2, 9)
        text = f"How many {smaller} are in {n} {PLURAL.get(unit, unit + 's')}?"
        if text in seen:
            continue
        seen.add(text)
        value = n * factor
        wrong = {value * 10, value + factor, value - factor, n * (factor * 10 if factor < 100 else factor // 10), value + n}
        wrong = [str(w) for w in wrong if w > 0 and w != value]
        rows.append(question("unit_conversion", text, str(value), rng.sample(wrong, 3), rng))
    return rows


def world_capitals(rng):
    countries = rng.sample(sorted(CAPITALS), PER_SUBJECT)
    return [question("world_capitals", f"What is the capital of {c}?", CAPITALS[c],
                     others(rng, CAPITALS.values(), CAPITALS[c]), rng) for c in countries]


def continents(rng):
    pairs = rng.sample([(country, continent) for continent, names in CONTINENTS.items() for country in names], PER_SUBJECT)
    return [question("continents", f"On which continent is {country}?", continent, others(rng, CONTINENTS, continent), rng)
            for country, continent in pairs]


def chemical_symbols(rng):
    names = rng.sample(sorted(ELEMENTS), PER_SUBJECT)
    return [question("chemical_symbols", f"What is the chemical symbol for {n}?", ELEMENTS[n],
                     others(rng, ELEMENTS.values(), ELEMENTS[n]), rng) for n in names]


def science(rng):
    return [question("science", q, a, d, rng) for q, a, d in rng.sample(SCIENCE, PER_SUBJECT)]


def word_meanings(rng):
    words = rng.sample(sorted(MEANINGS), PER_SUBJECT)
    return [question("word_meanings", f"What does the word '{w}' mean?", MEANINGS[w],
                     others(rng, MEANINGS.values(), MEANINGS[w]), rng) for w in words]


def opposites(rng):
    words = rng.sample(sorted(OPPOSITES), PER_SUBJECT)
    return [question("opposites", f"What is the opposite of '{w}'?", OPPOSITES[w],
                     others(rng, OPPOSITES.values(), OPPOSITES[w], {d for x, d in AVOID if x == w} | {w}), rng)
            for w in words]


def animals(rng):
    rows = []
    for text, answer, kind in rng.sample(ANIMALS, PER_SUBJECT):
        pool = LEG_COUNTS if kind == "legs" else [a for _, a, k in ANIMALS if k == kind]
        rows.append(question("animals", text, answer, others(rng, pool, answer), rng))
    return rows


def calendar(rng):
    items = [(f"Which month comes after {MONTHS[i]}?", MONTHS[i + 1], MONTHS) for i in range(11)]
    items += [(f"Which day of the week comes after {WEEKDAYS[i]}?", WEEKDAYS[(i + 1) % 7], WEEKDAYS) for i in range(7)]
    items += [(f"How many days are there in {MONTHS[i]}?", str(DAYS_IN[i]), ["28", "29", "30", "31"])
              for i in range(12) if i != 1]  # February: 28 or 29
    items += [("How many days are there in a week?", "7", ["5", "6", "8", "10"]),
              ("How many months are there in a year?", "12", ["10", "11", "13", "14"]),
              ("How many days are there in a leap year?", "366", ["364", "365", "367"]),
              ("Which month is the first month of the year?", "January", MONTHS),
              ("Which month is the last month of the year?", "December", MONTHS),
              ("How many hours are there in a day?", "24", ["12", "20", "30", "60"])]
    rows = []
    for text, answer, pool in rng.sample(items, PER_SUBJECT):
        rows.append(question("calendar", text, answer, others(rng, pool, answer), rng))
    return rows


SUBJECTS = [arithmetic, unit_conversion, world_capitals, continents, chemical_symbols, science, word_meanings,
            opposites, animals, calendar]


def main():
    rng = random.Random(SEED)
    rows = []
    for make in SUBJECTS:
        made = make(rng)
        # the right answer at each position equally often (a model that favours one letter gains nothing)
        dev, test = [i % 4 for i in range(DEV)], [i % 4 for i in range(len(made) - DEV)]
        rng.shuffle(dev)
        rng.shuffle(test)
        positions = dev + test
        for i, (row, position) in enumerate(zip(made, positions)):
            choices = row["choices"]
            choices[row["answer"]], choices[position] = choices[position], choices[row["answer"]]
            rows.append({**row, "answer": position, "split": "dev" if i < DEV else "test"})
    path = os.path.join(HERE, "multiple_choice.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"multiple_choice.jsonl: {len(rows)} rows, {len(SUBJECTS)} subjects, {DEV} dev rows each")


if __name__ == "__main__":
    main()
