#!/usr/bin/env python3
"""Generate the sample datasets in this folder.

All question/answer text is written by hand below; a few arithmetic word
problems and capital-city questions are filled in from templates (answers are
computed, so they are correct). Output is deterministic (fixed seed).

Run:  python3 data_samples/make_samples.py
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1234

# ---------------------------------------------------------------------------
# Hand-written single-turn question/answer pairs
# ---------------------------------------------------------------------------
HOWTO = [
    ("How do I get a stain out of a white shirt?",
     "Blot the stain, then rinse it from the back with cold water. Rub in a little liquid detergent or stain remover, let it sit for 10 minutes, and wash as usual. Skip the dryer until the stain is gone, since heat can set it."),
    ("How can I make my phone battery last longer?",
     "Lower the screen brightness, turn off Bluetooth and location when you don't need them, and close apps running in the background. Battery saver mode also helps a lot on busy days."),
    ("How do I unclog a slow bathroom sink?",
     "Pull out and clean the stopper first, since hair often collects there. Then pour in half a cup of baking soda followed by a cup of vinegar, wait 15 minutes, and flush with hot water."),
    ("How do I tie a tie?",
     "For a simple four-in-hand knot, let the wide end hang longer, cross it over the narrow end, and wrap it around once. Bring it up through the neck loop, then down through the front of the knot, and tighten gently."),
    ("How often should I water a cactus?",
     "Most cacti need water only every two to three weeks in spring and summer, and about once a month in winter. Let the soil dry out completely between waterings, because overwatering is the most common way to kill them."),
    ("How do I change a flat tire?",
     "Park on flat ground, loosen the lug nuts slightly, then jack up the car. Remove the nuts and the flat, put on the spare, hand-tighten the nuts, lower the car, and finish tightening them in a star pattern."),
    ("How can I fall asleep faster?",
     "Keep a regular bedtime, avoid screens and caffeine in the evening, and keep your room cool and dark. If you can't sleep after about 20 minutes, get up and do something calm until you feel drowsy."),
    ("How do I clean a cast iron pan?",
     "Rinse it with hot water while it's still warm and scrub with a brush or coarse salt. Dry it completely on the stove, then rub in a thin layer of oil to keep it seasoned."),
    ("How do I remove a splinter?",
     "Wash the area, then use clean tweezers to grip the end and pull it out at the same angle it went in. If it's deep, soak the skin in warm water first. Clean it again and cover it with a bandage."),
    ("How do I help my houseplants grow better?",
     "Give each plant the right amount of light for its type, water only when the top inch of soil is dry, and use pots with drainage holes. A diluted fertilizer once a month in spring and summer also helps."),
    ("How can I speed up a slow computer?",
     "Restart it, close programs you aren't using, and stop unneeded apps from launching at startup. Freeing up disk space and installing system updates often helps too."),
    ("How do I create a strong password?",
     "Use a long passphrase of four or more random words, like 'maple-river-candle-orbit'. Length matters more than odd symbols. Use a different password for every account, ideally stored in a password manager."),
    ("How do I fold a fitted sheet?",
     "Tuck the corners into each other so the sheet forms a rectangle with the elastic edges together. Lay it flat, fold it in thirds lengthwise, then fold it up into a neat square."),
    ("How do I get rid of fruit flies?",
     "Put a little apple cider vinegar in a bowl with a drop of dish soap; the flies are drawn in and sink. Also toss overripe fruit and take out the trash so they have nothing to breed on."),
    ("How do I defrost a freezer quickly?",
     "Unplug it, move the food to a cooler, and put bowls of hot water inside with the door closed. Swap in fresh hot water every 15 minutes and wipe up the ice as it loosens."),
    ("How can I keep cut flowers fresh longer?",
     "Trim the stems at an angle, remove any leaves below the waterline, and change the water every two days. Keep the vase away from direct sun and ripening fruit."),
    ("How do I jump-start a car?",
     "Clip red to the dead battery's positive terminal, then to the good battery's positive. Clip black to the good battery's negative and the other black clamp to bare metal on the dead car. Start the good car, wait a few minutes, then start the other."),
    ("How do I sew on a button?",
     "Knot a threaded needle, push it up through the fabric and one buttonhole, then down through the opposite hole. Repeat about six times, wrap the thread around the stitches under the button, and knot it on the back."),
    ("How do I make a monthly budget?",
     "List your monthly income, then write down fixed costs like rent and bills. Set amounts for groceries, savings and fun money, track what you actually spend, and adjust the plan each month."),
    ("How do I stop my glasses from fogging up when I wear a mask?",
     "Pinch the mask's nose wire so it fits snugly and let your glasses rest on top of the mask. Washing the lenses with a little soapy water and letting them air dry also reduces fogging."),
    ("How do I remove sticker residue?",
     "Rub a little cooking oil or rubbing alcohol into the residue, let it sit for a few minutes, then wipe it away with a cloth. Wash the surface with soapy water afterward."),
    ("How do I pack a suitcase efficiently?",
     "Roll soft clothes instead of folding them, put heavy items like shoes near the wheels, and fill gaps with socks and small things. Packing cubes help keep everything organized."),
    ("How can I learn to touch type?",
     "Keep your fingers on the home row (ASDF and JKL;) and practice with a free typing tutor for 15 minutes a day. Focus on accuracy before speed, and try not to look at the keyboard."),
    ("How do I take a screenshot on Windows?",
     "Press Windows + Shift + S to select part of the screen, or press Print Screen to copy the whole screen. Windows + Print Screen saves a full screenshot straight to your Pictures folder."),
    ("How do I keep my bike chain in good shape?",
     "Wipe it with a rag after muddy rides, clean it with degreaser every few weeks, and put a drop of chain lube on each link. Wipe off the excess so it doesn't attract dirt."),
    ("How do I start running as a beginner?",
     "Start with run-walk intervals, like one minute running and two minutes walking for 20 minutes, three times a week. Add a little more running each week and keep an easy pace where you can still talk."),
    ("How do I get rid of hiccups?",
     "Try holding your breath for about ten seconds, sipping cold water slowly, or breathing into your cupped hands. Most hiccups stop on their own within a few minutes."),
    ("How do I clean my laptop screen safely?",
     "Turn it off and wipe gently with a dry microfiber cloth. For smudges, lightly dampen the cloth with water; never spray liquid directly on the screen, and avoid paper towels or harsh cleaners."),
    ("How do I prepare for a job interview?",
     "Research the company, reread the job posting, and prepare short stories that show your skills. Practice common questions out loud, have a couple of questions ready for them, and plan to arrive a few minutes early."),
    ("How can I reduce my screen time?",
     "Set daily app limits in your phone settings, turn off nonessential notifications, and keep your phone out of the bedroom. Replacing the habit with something else, like a book, makes it easier to stick with."),
]

COOKING = [
    ("How do I make hard-boiled eggs?",
     "Put the eggs in a pot, cover them with cold water, and bring it to a boil. Turn off the heat, cover, and let them sit for 10 to 12 minutes. Then move them to ice water so they're easy to peel."),
    ("How do I cook white rice on the stove?",
     "Rinse 1 cup of rice, then add it to a pot with about 1.5 to 2 cups of water and a pinch of salt. Bring to a boil, cover, and simmer on low for about 18 minutes. Let it rest 5 minutes, then fluff with a fork."),
    ("What can I use instead of eggs in baking?",
     "For each egg, use a quarter cup of mashed banana or applesauce, or a 'flax egg' made from 1 tablespoon of ground flaxseed mixed with 3 tablespoons of water. These work best in muffins, cookies and pancakes."),
    ("How do I make a simple vinaigrette?",
     "Whisk 3 parts olive oil with 1 part vinegar, then add a pinch of salt, some pepper and a little mustard to help it blend. Taste and adjust; a touch of honey is nice if it's too sharp."),
    ("How long should I cook pasta?",
     "Most dried pasta takes 8 to 12 minutes in well-salted boiling water, but check the package. Start tasting a minute early; it's ready when it's tender but still slightly firm in the center."),
    ("How do I know when chicken is cooked through?",
     "Use a meat thermometer: chicken is safe at 165°F (74°C) in the thickest part. The juices should run clear and the meat should no longer be pink."),
    ("How do I make pancakes from scratch?",
     "Mix 1 cup flour, 1 tablespoon sugar, 2 teaspoons baking powder and a pinch of salt. Whisk in 1 cup milk, 1 egg and 2 tablespoons melted butter. Cook scoops on a hot greased pan until bubbles form, then flip."),
    ("Why does my homemade bread come out dense?",
     "Dense bread usually means the dough didn't rise enough, often because the yeast was old, the kitchen was cold, or it wasn't kneaded long enough. Too much flour can also make it heavy."),
    ("How do I chop an onion without crying?",
     "Chill the onion for 15 minutes before cutting and use a very sharp knife, which crushes fewer cells. Cutting near a fan or an open window also carries the irritating gas away."),
    ("How can I fix soup that is too salty?",
     "Add more unsalted liquid, like water or low-sodium broth, or add bulk such as potatoes, rice or extra vegetables. A squeeze of lemon can also make the saltiness less noticeable."),
    ("What's the difference between baking soda and baking powder?",
     "Baking soda is pure sodium bicarbonate and needs an acid, like buttermilk or yogurt, to make batter rise. Baking powder already contains an acid, so it works with just moisture and heat."),
    ("How do I make guacamole?",
     "Mash 2 ripe avocados, then stir in the juice of half a lime, a pinch of salt, and some chopped onion, cilantro and tomato. Add chopped jalapeño if you like heat, and taste to adjust the salt."),
    ("How do I keep fresh herbs from wilting?",
     "Trim soft herbs like parsley and cilantro and stand them in a glass of water in the fridge; basil prefers the counter. Wrap hardy herbs like rosemary and thyme in a damp paper towel and refrigerate them."),
    ("How long do cooked leftovers last in the fridge?",
     "Most cooked leftovers are good for 3 to 4 days in the fridge. Cool them quickly, store them in sealed containers, and reheat them until steaming hot."),
    ("How do I make a basic tomato sauce?",
     "Soften a chopped onion and two garlic cloves in olive oil, then add a can of crushed tomatoes, salt and a pinch of sugar. Simmer for about 20 minutes and finish with fresh basil."),
    ("How can I tell if an egg is still fresh?",
     "Place it in a bowl of water. A fresh egg sinks and lies flat, an older one stands on its end, and an egg that floats should be thrown out."),
    ("How do I make popcorn on the stove?",
     "Heat 2 tablespoons of oil in a large pot with 3 kernels. When they pop, add half a cup of kernels, cover, and shake the pot often. Take it off the heat when the pops slow to a few seconds apart."),
    ("What's a quick healthy breakfast?",
     "Try Greek yogurt with berries and a spoonful of oats, or whole-grain toast with peanut butter and banana. Both take under five minutes and give you protein and fiber to stay full."),
    ("How do I keep a cut avocado from turning brown?",
     "Brush the cut surface with lemon or lime juice, then wrap it tightly so air can't reach it. Leaving the pit in place helps a little too."),
    ("How do I roast vegetables?",
     "Cut them into even pieces, toss with olive oil and salt, and spread them in a single layer on a baking sheet. Roast at 425°F (220°C) for 20 to 35 minutes, turning once, until browned at the edges."),
    ("How do I make iced tea at home?",
     "Steep 4 tea bags in 4 cups of hot water for about 5 minutes, then remove the bags. Sweeten it while warm if you like, add 4 cups of cold water, and chill before serving over ice."),
    ("Why do recipes say to let meat rest after cooking?",
     "Resting gives the juices time to settle back through the meat instead of running out when you cut it. A few minutes for a steak, or 10 to 20 for a roast, keeps it juicier."),
    ("How do I soften butter quickly?",
     "Cut it into small cubes and leave them at room temperature for 10 to 15 minutes. You can also grate cold butter, which softens almost right away."),
    ("How do I make fluffy scrambled eggs?",
     "Whisk the eggs well with a pinch of salt, then cook them over low heat while stirring gently. Take them off the heat while they still look slightly wet, since they keep cooking on the plate."),
    ("Can I freeze bread?",
     "Yes, bread freezes very well for up to three months. Slice it first and store it in an airtight bag, then toast slices straight from the freezer."),
    ("What does it mean to fold ingredients together?",
     "Folding is a gentle way of mixing that keeps air in a batter. Use a spatula to cut down through the middle, sweep along the bottom, and turn the mixture over, rotating the bowl as you go."),
    ("How do I make a grilled cheese sandwich?",
     "Butter the outside of two slices of bread, put cheese between them, and cook in a pan over medium-low heat. Flip after 3 to 4 minutes when golden, and cook until the cheese melts."),
    ("How much water should I use for oatmeal?",
     "For rolled oats, use about 2 parts liquid to 1 part oats, such as 1 cup of water or milk for half a cup of oats. Simmer for about 5 minutes, stirring now and then."),
    ("What spices go well with roast chicken?",
     "Paprika, garlic powder, thyme, rosemary, salt and black pepper make a classic mix. For something different, try cumin and coriander, or lemon zest with oregano."),
    ("How do I keep pasta from sticking together?",
     "Use plenty of boiling water, stir during the first two minutes, and don't rinse it after draining. Tossing it with the sauce right away keeps it from clumping."),
]

SCIENCE = [
    ("Why is the sky blue?",
     "Sunlight contains all colors, but air molecules scatter short blue wavelengths much more than red ones. That scattered blue light reaches our eyes from every direction, so the sky looks blue."),
    ("What causes the seasons?",
     "Seasons happen because Earth's axis is tilted about 23.5 degrees. As Earth orbits the Sun, each hemisphere takes turns leaning toward it, getting more direct sunlight and longer days in its summer."),
    ("How do plants make their own food?",
     "Plants use photosynthesis: their leaves capture sunlight and use its energy to turn carbon dioxide and water into sugar. Oxygen is released as a by-product."),
    ("What is the boiling point of water?",
     "At sea level, water boils at 100°C (212°F). At higher altitudes the air pressure is lower, so water boils at a lower temperature."),
    ("Why do we have tides?",
     "Tides are caused mainly by the Moon's gravity pulling on Earth's oceans, creating bulges of water on the side facing the Moon and the opposite side. As Earth rotates, most coasts get two high tides a day."),
    ("How far away is the Moon?",
     "The Moon is about 384,400 kilometers (238,900 miles) from Earth on average. Light covers that distance in a little over one second."),
    ("What is DNA?",
     "DNA is the molecule that carries genetic instructions in living things. It is shaped like a twisted ladder, called a double helix, and the order of its four bases encodes how to build proteins."),
    ("Why do leaves change color in autumn?",
     "As days shorten, trees stop making chlorophyll, the green pigment. As it breaks down, yellow and orange pigments that were there all along show through, and some trees also make red pigments."),
    ("What is gravity?",
     "Gravity is the force by which masses attract each other. It keeps us on the ground, holds the Moon in orbit around Earth, and keeps Earth orbiting the Sun."),
    ("How many bones are in the human body?",
     "An adult human has 206 bones. Babies are born with around 270, but some of them fuse together as they grow."),
    ("What is the speed of light?",
     "Light travels at about 299,792 kilometers per second in a vacuum, or roughly 186,000 miles per second. Nothing that carries information can travel faster."),
    ("What is the largest planet in our solar system?",
     "Jupiter is the largest planet. It is a gas giant about 11 times wider than Earth, and its Great Red Spot is a storm bigger than our whole planet."),
    ("Why does ice float on water?",
     "When water freezes, its molecules lock into an open crystal structure that takes up more space than liquid water. That makes ice less dense, so it floats."),
    ("What causes thunder?",
     "Lightning heats the air around it extremely fast, to around 30,000°C. The air expands explosively, creating the shock wave we hear as thunder."),
    ("How do vaccines work?",
     "Vaccines show your immune system a harmless piece or weakened version of a germ. Your body learns to recognize it and makes antibodies, so it can fight the real germ quickly if you meet it later."),
    ("What is an atom made of?",
     "An atom has a tiny nucleus made of protons and neutrons, surrounded by electrons. The number of protons decides which element it is."),
    ("Why do we need sleep?",
     "Sleep lets the brain store memories and clear out waste, and it helps the body repair tissue and regulate hormones. Without enough of it, focus, mood and immunity all suffer."),
    ("What is the difference between weather and climate?",
     "Weather is what the atmosphere is doing over hours or days, like today's rain. Climate is the average pattern of weather in a place over many years."),
    ("How does a rainbow form?",
     "Sunlight enters raindrops, bends, reflects off the back of each drop, and bends again on the way out. Each color bends by a slightly different amount, so the light spreads into a band of colors."),
    ("What is the closest star to Earth?",
     "The closest star is the Sun. The next closest is Proxima Centauri, about 4.2 light-years away."),
    ("Why is the ocean salty?",
     "Rain slowly dissolves minerals from rocks, and rivers carry them to the sea. When seawater evaporates the salt stays behind, so it has built up over millions of years."),
    ("What do red blood cells do?",
     "Red blood cells carry oxygen from your lungs to the rest of your body using a protein called hemoglobin. They also carry some carbon dioxide back to the lungs to be breathed out."),
    ("How hot is the Sun?",
     "The Sun's surface is about 5,500°C (about 10,000°F). Its core is far hotter, around 15 million °C, where nuclear fusion powers it."),
    ("What is a black hole?",
     "A black hole is a region of space where gravity is so strong that nothing, not even light, can escape. Many form when very massive stars collapse at the end of their lives."),
    ("Why do cats purr?",
     "Cats purr by rapidly vibrating muscles in their voice box. They often purr when content, but also when stressed or hurt, so purring may help calm them too."),
    ("What is the chemical formula for water?",
     "Water is H2O: each molecule has two hydrogen atoms bonded to one oxygen atom."),
    ("How does a magnet work?",
     "In a magnet, the tiny magnetic fields of many electrons line up in the same direction. Together they create a field that attracts iron and pushes or pulls other magnets."),
    ("What is the difference between a virus and bacteria?",
     "Bacteria are single-celled organisms that can reproduce on their own, and many are harmless or helpful. Viruses are much smaller and can only multiply inside a host's cells. Antibiotics work on bacteria but not on viruses."),
    ("Why do we see lightning before we hear thunder?",
     "Light travels about a million times faster than sound. You can estimate the distance by counting the seconds between flash and thunder: every 3 seconds is roughly 1 kilometer."),
    ("What are the three states of matter?",
     "The three common states are solid, liquid and gas. Solids keep their shape, liquids take the shape of their container, and gases spread out to fill any space."),
    ("How long does it take Earth to go around the Sun?",
     "Earth takes about 365.25 days to orbit the Sun. The extra quarter day is why we add a leap day to the calendar every four years."),
    ("What is the hardest natural substance?",
     "Diamond is the hardest natural material. It is made of carbon atoms bonded in a very strong, rigid crystal lattice."),
    ("How many planets are in the solar system?",
     "There are eight planets: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune. Pluto was reclassified as a dwarf planet in 2006."),
    ("What makes a volcano erupt?",
     "Deep underground, rock melts into magma, which is lighter than the surrounding rock and rises. Gas pressure builds up inside it, and when the pressure is too great the magma bursts out."),
    ("Why do we yawn?",
     "Scientists aren't completely sure, but one leading idea is that yawning helps cool the brain. Yawning is also contagious, which may help groups stay alert together."),
]

GEOGRAPHY = [
    ("What is the longest river in the world?",
     "The Nile, about 6,650 km long, is usually listed as the longest river, though some measurements put the Amazon slightly ahead. The Amazon carries far more water than any other river."),
    ("What is the tallest mountain in the world?",
     "Mount Everest is the tallest mountain above sea level at about 8,849 meters (29,032 feet). It sits on the border between Nepal and China."),
    ("What is the largest ocean?",
     "The Pacific Ocean is the largest, covering about a third of Earth's surface. It is bigger than all of Earth's land put together."),
    ("What is the largest desert in the world?",
     "The largest hot desert is the Sahara in North Africa. If you count cold deserts, Antarctica is the largest of all, because it gets so little precipitation."),
    ("How many continents are there?",
     "There are seven continents: Africa, Antarctica, Asia, Australia (Oceania), Europe, North America and South America. Asia is the largest."),
    ("What is the largest country by area?",
     "Russia is the largest country by area, at about 17 million square kilometers. It spans eleven time zones across Europe and Asia."),
    ("Which country has the most people?",
     "India has the largest population, having passed China in 2023. Each has more than 1.4 billion people."),
    ("Where is the Great Barrier Reef?",
     "The Great Barrier Reef lies off the coast of Queensland in northeastern Australia. It is the world's largest coral reef system, stretching over 2,300 kilometers."),
    ("What is the smallest country in the world?",
     "Vatican City is the smallest country, at about 0.44 square kilometers. It is surrounded by the city of Rome, Italy."),
    ("What is the deepest point in the ocean?",
     "The Challenger Deep in the Mariana Trench, in the western Pacific, is the deepest known point, nearly 11,000 meters (about 36,000 feet) below sea level."),
    ("Which countries does the Amazon rainforest cover?",
     "Most of the Amazon is in Brazil, but it also extends into Peru, Colombia, Venezuela, Ecuador, Bolivia, Guyana, Suriname and French Guiana."),
    ("What is the largest lake in Africa?",
     "Lake Victoria is Africa's largest lake. It is shared by Uganda, Kenya and Tanzania and is a main source of the Nile."),
    ("What language do people speak in Brazil?",
     "The official language of Brazil is Portuguese, a legacy of Portuguese colonization. That makes Brazil the largest Portuguese-speaking country in the world."),
    ("What is the equator?",
     "The equator is an imaginary line around the middle of Earth, halfway between the North and South Poles, at 0 degrees latitude. It divides the planet into the Northern and Southern Hemispheres."),
    ("Which continent is Egypt in?",
     "Egypt is mainly in Africa, in its northeast corner. Its Sinai Peninsula reaches into Asia, so it is considered a transcontinental country."),
    ("What is the largest island in the world?",
     "Greenland is the largest island, at about 2.16 million square kilometers. Australia is bigger, but it is counted as a continent."),
    ("What is the capital of South Africa?",
     "South Africa has three capitals: Pretoria is the executive capital, Cape Town the legislative one, and Bloemfontein the judicial one."),
]

PROGRAMMING = [
    ("How do I reverse a string in Python?",
     "Use slicing with a step of -1: `reversed_text = text[::-1]`. For example, `'hello'[::-1]` gives `'olleh'`."),
    ("How do I read a file line by line in Python?",
     "Use a `with` block so the file closes automatically:\n```python\nwith open('data.txt') as f:\n    for line in f:\n        print(line.strip())\n```"),
    ("How do I check if a key exists in a Python dictionary?",
     "Use the `in` operator: `if 'name' in person:`. To get a value with a fallback, use `person.get('name', 'unknown')`."),
    ("What is a list comprehension in Python?",
     "It's a compact way to build a list from a loop. For example, `squares = [x * x for x in range(5)]` gives `[0, 1, 4, 9, 16]`, and you can add a filter like `if x % 2 == 0`."),
    ("How do I sort a list of dictionaries by a key in Python?",
     "Use `sorted` with a key function: `sorted(people, key=lambda p: p['age'])`. Add `reverse=True` to sort from highest to lowest."),
    ("How do I remove duplicates from a list in Python?",
     "`list(dict.fromkeys(items))` removes duplicates and keeps the original order. If order doesn't matter, `list(set(items))` works too."),
    ("What's the difference between a list and a tuple in Python?",
     "Lists are mutable, so you can add, remove or change items, and they use square brackets. Tuples use parentheses and can't be changed after creation, which suits fixed data."),
    ("How do I write a Python function that adds two numbers?",
     "Here's a simple one:\n```python\ndef add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n```"),
    ("How do I count the words in a string in Python?",
     "Split the string on whitespace and take the length: `len(text.split())`. To count how often each word appears, use `collections.Counter(text.lower().split())`."),
    ("How do I handle errors in Python?",
     "Wrap the risky code in `try` and catch the specific error:\n```python\ntry:\n    n = int(value)\nexcept ValueError:\n    print('Not a number')\n```"),
    ("How do I get today's date in Python?",
     "Use the datetime module: `from datetime import date`, then `date.today()` returns today's date. For the time as well, use `from datetime import datetime` and `datetime.now()`."),
    ("How do I loop over a list with indexes in Python?",
     "Use `enumerate`: `for i, item in enumerate(items): print(i, item)`. Pass `start=1` if you want counting to begin at 1."),
    ("What does if __name__ == '__main__' do in Python?",
     "It runs the code below it only when the file is executed directly, not when it's imported as a module. That lets one file work as both a reusable module and a script."),
    ("How do I install a Python package?",
     "Use pip from your terminal: `pip install requests`. It's good practice to do this inside a virtual environment, which you can create with `python -m venv .venv`."),
    ("How do I find the largest number in a Python list?",
     "Use the built-in `max`: `max([3, 9, 4])` returns `9`. `min` works the same way for the smallest value."),
    ("How do I join a list of strings with commas in Python?",
     "Call `join` on the separator: `', '.join(['a', 'b', 'c'])` gives `'a, b, c'`. Every item must be a string, so convert numbers with `map(str, items)` first."),
    ("How do I check if a number is even in Python?",
     "Use the modulo operator: `n % 2 == 0` is `True` for even numbers. For example, `10 % 2` is `0`, so 10 is even."),
    ("What is a Python virtual environment?",
     "It's an isolated folder with its own Python interpreter and packages, so each project can keep its own dependencies. Create one with `python -m venv .venv` and activate it before installing packages."),
    ("How do I convert a string to an integer in Python?",
     "Use `int()`: `int('42')` returns `42`. It raises a `ValueError` if the string isn't a valid whole number, so wrap it in try/except for user input."),
    ("How do I write a Python loop that counts from 1 to 10?",
     "Use `range`, which stops before the end value:\n```python\nfor i in range(1, 11):\n    print(i)\n```"),
    ("How do I read a JSON file in Python?",
     "Use the json module:\n```python\nimport json\n\nwith open('data.json') as f:\n    data = json.load(f)\n```\n`data` is then an ordinary dict or list."),
    ("What is the difference between == and is in Python?",
     "`==` checks whether two values are equal, while `is` checks whether they are the exact same object in memory. Use `is` mainly for comparisons with `None`."),
    ("How do I make a string uppercase in Python?",
     "Call the `upper()` method: `'hello'.upper()` returns `'HELLO'`. There are also `lower()`, `title()` and `capitalize()`."),
    ("How do I merge two dictionaries in Python?",
     "In Python 3.9 or newer, use `merged = a | b`. In older versions, `merged = {**a, **b}` works. Keys in `b` overwrite matching keys in `a`."),
    ("What is recursion in programming?",
     "Recursion is when a function calls itself to solve a smaller version of the same problem. It needs a base case to stop, like `factorial(0) = 1`, or it would run forever."),
    ("How do I write a list to a text file in Python?",
     "Open the file in write mode and write one item per line:\n```python\nwith open('out.txt', 'w') as f:\n    for item in items:\n        f.write(f'{item}\\n')\n```"),
]

WRITING = [
    ("Can you help me write a thank-you note to a coworker?",
     "Sure! Try: 'Hi Sam, thank you so much for helping me finish the report last week. Your advice on the charts made a big difference, and I really appreciate your time.' Adjust the details to fit what they did."),
    ("How do I write a good opening sentence for an essay?",
     "Start with something that grabs attention: a surprising fact, a short story, or a clear question your essay will answer. Then move quickly to your main point so readers know where you're headed."),
    ("What's a polite way to decline a meeting?",
     "You could write: 'Thanks for the invite. Unfortunately I can't make it at that time, but I'd be happy to review the notes afterward or find another slot that works.'"),
    ("How do I make my writing more concise?",
     "Cut filler words like 'very', 'really' and 'in order to', and swap weak phrases for strong verbs. Reread each sentence and ask whether every word earns its place."),
    ("Can you rewrite 'The report was written by me' in active voice?",
     "Sure: 'I wrote the report.' Active voice puts the person doing the action first, which usually makes sentences shorter and clearer."),
    ("What's a good way to end a cover letter?",
     "Restate your interest, thank the reader, and invite next steps, for example: 'Thank you for your time. I'd welcome the chance to discuss how I can help your team.' Then sign off with 'Sincerely' and your name."),
    ("How do I write a short bio for social media?",
     "Say who you are, what you do, and one personal detail in a sentence or two. For example: 'Teacher by day, amateur baker by night. Sharing recipes and classroom ideas.'"),
    ("When should I use a semicolon?",
     "Use a semicolon to join two complete sentences that are closely related, like 'It was raining; we stayed inside.' You can also use one to separate list items that already contain commas."),
    ("What's the difference between 'affect' and 'effect'?",
     "'Affect' is usually a verb meaning to influence, while 'effect' is usually a noun meaning a result. For example: 'The weather affected my mood; the effect was obvious.'"),
    ("Can you suggest a catchy title for a blog post about saving money?",
     "How about '10 Small Habits That Quietly Save You Hundreds'? Or try 'Spend Less, Live More: Simple Money Wins for Everyday Life.'"),
    ("How do I write a professional email asking for an extension?",
     "Keep it brief and specific: 'Hi Dr. Lee, I'm working on the project but need a little more time to do it well. Could I submit it on Friday instead of Wednesday? Thank you for considering it.'"),
    ("How can I improve my vocabulary?",
     "Read widely, and when you meet a new word, look it up and use it in a sentence of your own. Reviewing new words a few days later helps them stick."),
    ("What's a haiku? Can you write one?",
     "A haiku is a short poem with three lines of 5, 7 and 5 syllables. Here's one: 'Morning rain whispers / across the quiet rooftops / the kettle answers.'"),
    ("How do I write a strong thesis statement?",
     "State a clear, specific claim that someone could disagree with, and hint at your main reasons. For example: 'Cities should add bike lanes because they cut traffic, improve health and reduce pollution.'"),
    ("Should I use 'who' or 'whom'?",
     "Use 'who' for the subject and 'whom' for the object. A quick test: if you'd answer with 'he', use 'who'; if you'd answer with 'him', use 'whom'. 'Whom did you call?' 'I called him.'"),
    ("How do I apologize to a friend by text?",
     "Keep it sincere and specific: 'I'm sorry I snapped at you yesterday. You didn't deserve that, and I'd like to make it up to you.' Skip the excuses and give them time to reply."),
    ("Can you help me write a birthday message for my mom?",
     "Of course! 'Happy birthday, Mom! Thank you for your endless love, patience and terrible puns. I'm so lucky to have you, and I hope your day is as wonderful as you are.'"),
    ("What's the difference between 'its' and 'it's'?",
     "'It's' is short for 'it is' or 'it has', while 'its' shows possession. For example: 'It's raining, and the dog wants its blanket.'"),
    ("How do I structure a five-paragraph essay?",
     "Write an introduction that ends with your thesis, three body paragraphs that each make one supporting point with evidence, and a conclusion that sums up and restates your thesis in new words."),
    ("How can I make a presentation less boring?",
     "Put fewer words and more visuals on your slides, tell a short story or example early on, and talk to the audience instead of reading. Asking a question every few minutes keeps people engaged."),
]

DEFINITIONS = [
    ("What does 'inflation' mean?",
     "Inflation is the general rise in prices over time, which means each dollar buys a little less. Central banks usually aim to keep it low and steady, around 2% a year."),
    ("What is a noun?",
     "A noun is a word that names a person, place, thing or idea, like 'teacher', 'Paris', 'apple' or 'freedom'."),
    ("What is an algorithm?",
     "An algorithm is a step-by-step set of instructions for solving a problem or doing a task. A recipe is an everyday example; in computing, sorting a list is a classic one."),
    ("What does 'ephemeral' mean?",
     "'Ephemeral' means lasting for a very short time. For example: 'The beauty of cherry blossoms is ephemeral; they fall within a week or two.'"),
    ("What is a metaphor?",
     "A metaphor describes something by saying it is something else, without using 'like' or 'as'. For example, 'Time is a thief' suggests that time steals moments from us."),
    ("What is compound interest?",
     "Compound interest is interest earned on both your original money and the interest already added. For example, $100 at 10% a year becomes $110, then $121, growing faster over time."),
    ("What does 'procrastinate' mean?",
     "To procrastinate is to keep putting off something you need to do, often by doing easier or more pleasant things instead."),
    ("What is a democracy?",
     "A democracy is a system of government in which power belongs to the citizens, who usually vote in free elections to choose their leaders or decide laws."),
    ("What does GDP stand for?",
     "GDP stands for gross domestic product. It's the total value of all goods and services produced in a country over a period, usually a year, and is a common measure of an economy's size."),
    ("What is an ecosystem?",
     "An ecosystem is a community of living things, like plants, animals and microbes, interacting with each other and with their surroundings, such as soil, water and climate. A pond and a forest are both ecosystems."),
    ("What does 'empathy' mean?",
     "Empathy is the ability to understand and share someone else's feelings, imagining how things look from their point of view."),
    ("What is a prime number?",
     "A prime number is a whole number greater than 1 that is divisible only by 1 and itself. The first few are 2, 3, 5, 7, 11 and 13."),
    ("What is a synonym?",
     "A synonym is a word that means the same or nearly the same as another word. For example, 'happy' and 'joyful' are synonyms."),
    ("What does 'sustainable' mean?",
     "'Sustainable' describes something that can continue for a long time without using up resources or harming the environment, like farming that keeps the soil healthy."),
    ("What is a hypothesis?",
     "A hypothesis is a testable prediction or explanation that you check with an experiment or observation. For example: 'Plants grow taller with more sunlight.'"),
    ("What is machine learning?",
     "Machine learning is a branch of computer science in which programs learn patterns from data instead of following hand-written rules. Spam filters and recommendation systems are common examples."),
    ("What does 'irony' mean?",
     "Irony is when what happens, or what is said, is the opposite of what you'd expect. For example, a fire station burning down is situational irony."),
    ("What is a mortgage?",
     "A mortgage is a loan used to buy a home, with the home itself serving as security. You repay it with interest over a long period, often 15 to 30 years."),
    ("What is an adjective?",
     "An adjective is a word that describes a noun, like 'red', 'tall' or 'happy' in 'a happy dog'."),
    ("What does CPU stand for?",
     "CPU stands for central processing unit. It's the main chip in a computer that carries out program instructions, often called the computer's brain."),
    ("What is a carbon footprint?",
     "A carbon footprint is the total greenhouse gas emissions caused by a person, product or activity, usually measured in tons of carbon dioxide equivalent."),
    ("What does 'resilient' mean?",
     "'Resilient' means able to recover quickly from difficulties or spring back into shape. A resilient person bounces back after setbacks."),
    ("What is a palindrome?",
     "A palindrome is a word, phrase or number that reads the same forward and backward, like 'level', 'racecar' or 12321."),
    ("What is the difference between a simile and a metaphor?",
     "A simile compares two things using 'like' or 'as' ('brave as a lion'), while a metaphor says one thing is another ('he is a lion in battle')."),
    ("What is an API?",
     "An API, or application programming interface, is a set of rules that lets one program talk to another. For example, a weather app uses a weather service's API to fetch forecasts."),
]

ADVICE = [
    ("How can I be more productive when working from home?",
     "Keep a regular start time, work in a dedicated spot, and pick your top three tasks each morning. Short breaks every hour and a clear end to the workday help you stay focused without burning out."),
    ("How do I make new friends as an adult?",
     "Join something that meets regularly, like a class, club or volunteer group, so you see the same people often. Say yes to invitations and follow up by suggesting coffee or a walk."),
    ("How can I stay motivated to exercise?",
     "Pick an activity you actually enjoy, schedule it like an appointment, and start small. Tracking your progress or exercising with a friend makes it much easier to keep going."),
    ("How do I deal with stress before an exam?",
     "Break your revision into short sessions, sleep well the night before, and practice with past questions. On the day, slow breathing, like in for four counts and out for six, calms your nerves."),
    ("How can I save money on groceries?",
     "Plan meals for the week, shop with a list, and choose store brands. Checking what's already in your fridge and cooking in batches also cuts waste and cost."),
    ("How do I ask for a raise?",
     "Pick a good moment, like after a success or during a review, and bring evidence of your results and typical pay for your role. Ask for a specific number and stay calm and positive."),
    ("How can I drink more water every day?",
     "Keep a refillable bottle with you, drink a glass with each meal, and set reminders if you forget. Adding lemon or fruit slices makes it more appealing."),
    ("How do I stop procrastinating?",
     "Break the task into tiny steps and commit to just five minutes on the first one; starting is usually the hardest part. Removing distractions, like putting your phone in another room, helps too."),
    ("What should I do if I can't decide between two options?",
     "List the pros and cons of each, then imagine you've already chosen one and notice how you feel. If both are good, pick one and commit; deciding slowly often costs more than the difference."),
    ("How can I be a better listener?",
     "Give the speaker your full attention, put your phone away, and don't plan your reply while they're talking. Ask follow-up questions and briefly repeat what you heard to show you understood."),
    ("How do I keep a plant-based diet balanced?",
     "Include protein sources like beans, lentils, tofu and nuts at most meals, and eat plenty of whole grains, fruit and vegetables. If you're fully vegan, take a vitamin B12 supplement."),
    ("How can I build a reading habit?",
     "Read for 10 to 15 minutes at the same time each day, like before bed. Choose books you genuinely enjoy and keep one with you, so spare moments become reading time."),
    ("How do I handle a disagreement with a roommate?",
     "Talk privately at a calm moment, describe the problem with 'I' statements, and listen to their side. Then agree on a specific fix, like a cleaning schedule, and check in after a week or two."),
    ("How do I start learning a new language?",
     "Learn the most common words and phrases first and practice a little every day with an app or flashcards. Listening to podcasts and speaking early, even imperfectly, speeds things up a lot."),
    ("How can I feel less nervous about public speaking?",
     "Practice out loud several times, ideally in front of a friend, and know your opening lines well. Nerves are normal; slow breathing and focusing on your message rather than yourself help a lot."),
    ("How do I get better at managing my time?",
     "Write a short to-do list each day and rank tasks by importance. Block time on your calendar for the big ones, and batch small tasks like emails together."),
    ("What should I pack for a day hike?",
     "Bring plenty of water, snacks, sunscreen, a hat, a light rain jacket, a map or charged phone, and a small first-aid kit. Wear comfortable, broken-in shoes."),
    ("How can I improve my posture at a desk?",
     "Adjust your chair so your feet are flat and your knees are about level with your hips, and raise your screen to eye level. Keep your shoulders relaxed and get up to stretch every 30 to 60 minutes."),
    ("How should I prepare for a long flight?",
     "Wear comfortable layers, bring an empty water bottle to fill after security, and pack snacks, headphones and a charger. Get up to walk and stretch every couple of hours."),
    ("How do I tell someone I'm upset without starting a fight?",
     "Pick a calm moment and focus on how you feel rather than blaming them: 'I felt hurt when our plans were canceled last minute.' Then listen to their side and look for a solution together."),
]

MISC = [
    ("Can you recommend a good board game for a family?",
     "Ticket to Ride is a great choice: it's easy to learn, works for 2 to 5 players, and is fun for kids and adults alike. Carcassonne and Uno are also family favorites."),
    ("What's a fun thing to do on a rainy day?",
     "Try a movie marathon with homemade popcorn, a board game tournament, or baking something new. It's also a cozy time to start a jigsaw puzzle or a good book."),
    ("Tell me a fun fact about animals.",
     "Octopuses have three hearts and blue blood. Two hearts pump blood through the gills, and the third pumps it to the rest of the body."),
    ("Can you tell me a joke?",
     "Sure! Why don't scientists trust atoms? Because they make up everything."),
    ("What's a good name for a golden retriever puppy?",
     "How about Sunny, Maple, Biscuit or Honey? They suit a golden coat and a cheerful personality."),
    ("What should I cook for a dinner date at home?",
     "Pick something simple you've made before, like pasta with a fresh tomato sauce and a green salad. It's reliable, easy to eat, and leaves you time to chat instead of fussing in the kitchen."),
    ("How many hours of sleep do adults need?",
     "Most adults need 7 to 9 hours of sleep a night. Going to bed and waking up at consistent times matters too."),
    ("What's a good stretch for lower back pain?",
     "Try the knee-to-chest stretch: lie on your back, gently pull one knee toward your chest, hold for 20 to 30 seconds, then switch. Stop if it hurts, and see a doctor if the pain persists."),
    ("How many minutes are in a day?",
     "There are 1,440 minutes in a day: 24 hours times 60 minutes."),
    ("How many centimeters are in an inch?",
     "One inch equals exactly 2.54 centimeters."),
    ("How do I convert Celsius to Fahrenheit?",
     "Multiply the Celsius temperature by 9/5 and add 32. For example, 20°C × 9/5 = 36, and 36 + 32 = 68°F."),
    ("How many ounces are in a pound?",
     "There are 16 ounces in a pound. A pound is about 454 grams."),
    ("How many feet are in a mile?",
     "A mile has 5,280 feet, which is about 1.6 kilometers."),
    ("How many seconds are in an hour?",
     "There are 3,600 seconds in an hour: 60 minutes times 60 seconds."),
    ("How many milliliters are in a liter?",
     "There are 1,000 milliliters in a liter, so a 500 mL bottle holds half a liter."),
    ("How long is a marathon?",
     "A marathon is 42.195 kilometers, or about 26.2 miles."),
    ("How many days are in a leap year?",
     "A leap year has 366 days, with February 29 as the extra day."),
    ("What is the square root of 144?",
     "The square root of 144 is 12, because 12 × 12 = 144."),
    ("How many sides does a hexagon have?",
     "A hexagon has six sides and six angles. The cells of a honeycomb are a famous natural example."),
    ("What is pi?",
     "Pi is the ratio of a circle's circumference to its diameter, about 3.14159. It's the same for every circle, and its digits go on forever without repeating."),
    ("How many degrees are in a triangle?",
     "The three interior angles of any triangle always add up to 180 degrees."),
    ("What is the Pythagorean theorem?",
     "In a right triangle, the square of the longest side equals the sum of the squares of the other two: a² + b² = c². For example, sides of 3 and 4 give a hypotenuse of 5."),
]

# (country, capital, extra sentence or None)
CAPITALS = [
    ("France", "Paris", "It is also the country's largest city and home to the Eiffel Tower."),
    ("Japan", "Tokyo", "Its metropolitan area is one of the largest in the world."),
    ("Canada", "Ottawa", "Many people guess Toronto, but that's the largest city, not the capital."),
    ("Australia", "Canberra", "Sydney and Melbourne are bigger, but Canberra was chosen as a compromise between them."),
    ("Brazil", "Brasília", "It was purpose-built and became the capital in 1960, replacing Rio de Janeiro."),
    ("Germany", "Berlin", "It is also the country's largest city."),
    ("Italy", "Rome", "Vatican City, an independent country, sits inside it."),
    ("Spain", "Madrid", "It is also the country's largest city."),
    ("Egypt", "Cairo", "It lies on the Nile, not far from the pyramids of Giza."),
    ("Kenya", "Nairobi", "It is also the country's largest city."),
    ("India", "New Delhi", None),
    ("China", "Beijing", None),
    ("Mexico", "Mexico City", "It is also the country's largest city."),
    ("Argentina", "Buenos Aires", "It is also the country's largest city."),
    ("Peru", "Lima", "It is also the country's largest city."),
    ("Chile", "Santiago", "It is also the country's largest city."),
    ("Norway", "Oslo", "It is also the country's largest city."),
    ("Sweden", "Stockholm", "It is built across a group of islands."),
    ("Finland", "Helsinki", "It is also the country's largest city."),
    ("Poland", "Warsaw", "It is also the country's largest city."),
    ("Portugal", "Lisbon", "It is also the country's largest city."),
    ("Greece", "Athens", "It is home to the Acropolis and the Parthenon."),
    ("Turkey", "Ankara", "Istanbul is bigger, but Ankara has been the capital since 1923."),
    ("South Korea", "Seoul", "It is also the country's largest city."),
    ("Thailand", "Bangkok", "It is also the country's largest city."),
    ("Vietnam", "Hanoi", "Ho Chi Minh City is larger, but Hanoi is the capital."),
    ("Nigeria", "Abuja", "It replaced Lagos as the capital in 1991."),
    ("New Zealand", "Wellington", "Auckland is the largest city, but Wellington is the capital."),
    ("Ireland", "Dublin", "It is also the country's largest city."),
    ("the Netherlands", "Amsterdam", "The government and parliament, though, sit in The Hague."),
    ("Switzerland", "Bern", "Zurich is the largest city, but Bern is the seat of government."),
    ("Austria", "Vienna", "It is also the country's largest city."),
    ("Hungary", "Budapest", "It was formed in 1873 by uniting Buda and Pest, on opposite banks of the Danube."),
    ("the Czech Republic", "Prague", "It is also the country's largest city."),
    ("Morocco", "Rabat", "Casablanca is bigger, but Rabat is the capital."),
    ("Ethiopia", "Addis Ababa", "It is also the country's largest city."),
    ("Colombia", "Bogotá", "It sits high in the Andes, at about 2,600 meters."),
    ("Cuba", "Havana", "It is also the country's largest city."),
    ("Iceland", "Reykjavík", "It is the northernmost capital of a sovereign country."),
    ("Denmark", "Copenhagen", "It is also the country's largest city."),
    ("Belgium", "Brussels", "It also hosts the main institutions of the European Union."),
    ("Russia", "Moscow", "It is also the country's largest city."),
    ("Ukraine", "Kyiv", "It is also the country's largest city."),
    ("the Philippines", "Manila", None),
    ("Pakistan", "Islamabad", "It was built in the 1960s to replace Karachi as the capital."),
    ("Saudi Arabia", "Riyadh", "It is also the country's largest city."),
    ("Ghana", "Accra", None),
    ("Malaysia", "Kuala Lumpur", "It is also the country's largest city."),
    ("Uruguay", "Montevideo", "It is also the country's largest city."),
    ("Venezuela", "Caracas", None),
    ("Jamaica", "Kingston", "It is also the country's largest city."),
    ("Scotland", "Edinburgh", "Glasgow is larger, but Edinburgh is the capital."),
]
CAPITAL_Q = ["What is the capital of {c}?", "Which city is the capital of {c}?",
             "What's the capital city of {c}?"]


def capital_item(rng, country, cap, extra):
    q = rng.choice(CAPITAL_Q).format(c=country)
    a = f"The capital of {country} is {cap}."
    if extra:
        a += " " + extra
    return (q, a)


# ---------------------------------------------------------------------------
# Arithmetic word problems (answers computed)
# ---------------------------------------------------------------------------
NAMES = ["Maya", "Leo", "Aisha", "Tom", "Priya", "Carlos", "Emma", "Kenji", "Sofia",
         "Omar", "Lily", "Noah", "Zara", "Ben", "Hana", "Diego", "Nina", "Sam"]
ITEMS = ["notebooks", "pens", "apples", "movie tickets", "cupcakes", "plants", "books", "bus passes"]
SALE = ["jacket", "pair of shoes", "lamp", "backpack", "board game", "blender"]


NUMW = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six"}


def pl(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def math_item(rng):
    k = rng.randrange(12)
    name = rng.choice(NAMES)
    if k == 0:
        n, p, item = rng.randint(3, 9), rng.choice([2, 3, 4, 5, 6, 7, 8, 12, 15]), rng.choice(ITEMS)
        return (f"{name} buys {n} {item} for ${p} each. How much does {name} spend in total?",
                f"{name} spends {n} × ${p} = ${n * p} in total.")
    if k == 1:
        t, s = rng.randint(2, 5), rng.choice([40, 45, 50, 60, 70, 80, 90])
        return (f"A train travels {s * t} km in {t} hours. What is its average speed?",
                f"Average speed is distance divided by time: {s * t} ÷ {t} = {s} km per hour.")
    if k == 2:
        a = rng.randint(12, 30); b = rng.randint(2, a - 3); c = rng.randint(2, 15)
        return (f"{name} has {a} stickers, gives {b} to a friend, and then gets {c} more. How many stickers does {name} have now?",
                f"{a} − {b} = {a - b}, and {a - b} + {c} = {a - b + c}. {name} has {a - b + c} stickers now.")
    if k == 3:
        while True:
            p, pct = rng.choice([20, 40, 60, 80, 100, 120, 150, 200]), rng.choice([10, 20, 25, 50])
            if p * pct % 100 == 0:
                break
        d = p * pct // 100
        item = rng.choice(SALE)
        return (f"A {item} costs ${p} and is on sale for {pct}% off. What is the sale price?",
                f"The discount is {pct}% of ${p}, which is ${d}, so the sale price is ${p} − ${d} = ${p - d}.")
    if k == 4:
        l = rng.randint(4, 15); w = rng.randint(2, l - 1)
        return (f"A rectangular garden is {l} m long and {w} m wide. What are its area and perimeter?",
                f"Area = {l} × {w} = {l * w} square meters. Perimeter = 2 × ({l} + {w}) = {2 * (l + w)} meters.")
    if k == 5:
        n, share = rng.randint(2, 6), rng.randint(8, 30)
        return (f"{NUMW[n]} friends split a ${n * share} restaurant bill equally. How much does each person pay?",
                f"Each person pays ${n * share} ÷ {n} = ${share}.")
    if k == 6:
        s, wk = rng.choice([5, 10, 15, 20, 25, 50]), rng.randint(4, 20)
        return (f"If {name} saves ${s} every week, how many weeks will it take to save ${s * wk}?",
                f"${s * wk} ÷ ${s} = {wk}, so it will take {name} {wk} weeks.")
    if k == 7:
        while True:
            p, n = rng.choice([10, 15, 20, 25, 30, 40, 50, 75]), 20 * rng.randint(2, 20)
            if p * n % 100 == 0:
                break
        return (f"What is {p}% of {n}?",
                f"{p}% of {n} is {n} × {p / 100:g} = {p * n // 100}.")
    if k == 8:
        h, m = rng.randint(1, 8), rng.choice([0, 15, 30, 45])
        dur = rng.choice([45, 90, 95, 105, 110, 120, 135, 150])
        tot = h * 60 + m + dur
        eh, em = tot // 60, tot % 60
        dh, dm = dur // 60, dur % 60
        parts = []
        if dh:
            parts.append(pl(dh, "hour"))
        if dm:
            parts.append(pl(dm, "minute"))
        return (f"A movie starts at {h}:{m:02d} pm and lasts {dur} minutes. What time does it end?",
                f"{dur} minutes is {' and '.join(parts)}, so the movie ends at {eh}:{em:02d} pm.")
    if k == 9:
        p, d = rng.randint(5, 30), rng.randint(3, 14)
        return (f"{name} reads {p} pages a day. How many pages will {name} read in {d} days?",
                f"{p} pages × {d} days = {p * d} pages.")
    if k == 10:
        kk, boxes = rng.choice([4, 6, 8, 10, 12]), rng.randint(3, 15)
        return (f"A baker makes {kk * boxes} cookies and packs them in boxes of {kk}. How many boxes does she fill?",
                f"{kk * boxes} ÷ {kk} = {boxes}, so she fills {boxes} boxes.")
    t1, d = rng.randint(-8, 15), rng.randint(3, 12)
    return (f"The temperature was {t1}°C in the morning and rose by {d} degrees by the afternoon. What was the afternoon temperature?",
            f"{t1} + {d} = {t1 + d}, so the afternoon temperature was {t1 + d}°C.")


# ---------------------------------------------------------------------------
# Multi-turn conversations (user, assistant, user, assistant, ...)
# ---------------------------------------------------------------------------
MULTI = [
    ["What's a good vegetable for a beginner to grow?",
     "Cherry tomatoes are a great start: they grow well in pots, produce lots of fruit, and only need a sunny spot and regular watering.",
     "How much sun do they need?",
     "Aim for at least 6 to 8 hours of direct sunlight a day. A sunny balcony or garden bed is ideal."],
    ["What is 12 times 15?", "12 × 15 = 180.", "And if I divide that by 4?", "180 ÷ 4 = 45."],
    ["Can you give me a word that means happy?",
     "Sure: 'joyful' is a good one. You could also use 'cheerful', 'content' or 'delighted'.",
     "What about a word that means sad?",
     "Try 'sorrowful', 'gloomy', 'downcast' or 'melancholy', depending on how strong you want it to sound."],
    ["How do I make a list in Python?",
     "Use square brackets: `fruits = ['apple', 'banana', 'cherry']`.",
     "How do I add an item to it?",
     "Use `append`: `fruits.append('mango')` adds it to the end.",
     "And how do I remove one?",
     "Use `fruits.remove('banana')` to remove by value, or `fruits.pop(0)` to remove by position."],
    ["What's the capital of Japan?", "The capital of Japan is Tokyo.",
     "Roughly how many people live there?",
     "About 14 million people live in Tokyo itself, and the greater Tokyo area has around 37 million, one of the largest metro areas in the world."],
    ["I want to start reading more. Any tips?",
     "Start with 10 minutes a day and pick books you're genuinely curious about, not ones you feel you should read.",
     "Can you recommend a short novel?",
     "Try 'The Old Man and the Sea' by Ernest Hemingway. It's only about 130 pages and a simple, moving story."],
    ["How do I convert 5 kilometers to miles?",
     "Multiply by about 0.621: 5 km is roughly 3.1 miles.",
     "And 10 kilometers?", "10 km is about 6.2 miles."],
    ["What is photosynthesis?",
     "It's how plants use sunlight to turn carbon dioxide and water into sugar, releasing oxygen.",
     "Where in the plant does it happen?",
     "Mostly in the leaves, inside tiny structures called chloroplasts, which contain the green pigment chlorophyll."],
    ["Can you help me plan a quick dinner?",
     "Sure! How about a vegetable stir-fry with rice? It takes about 20 minutes.",
     "I don't have rice. What else works?",
     "Noodles are a great swap, or serve the stir-fry over quinoa or couscous if you have some. A fried egg on top makes it more filling."],
    ["What does 'ubiquitous' mean?",
     "'Ubiquitous' means found everywhere. For example: 'Smartphones are ubiquitous today.'",
     "Can you use it in another sentence?",
     "Sure: 'In the fall, pumpkin spice flavors are ubiquitous in coffee shops.'"],
    ["I have a job interview tomorrow and I'm nervous.",
     "That's completely normal, and a few nerves show you care. Tonight, review the job description and prepare two or three stories about your achievements.",
     "What should I wear?",
     "Dress one step more formal than the company's everyday style. If you're unsure, neat business casual, like a collared shirt and clean trousers, is a safe choice.",
     "Thanks, that helps!",
     "You're welcome! Get a good night's sleep, and good luck tomorrow."],
    ["How many legs does a spider have?", "Spiders have eight legs.",
     "And insects?", "Insects have six legs, which is one easy way to tell them apart from spiders."],
    ["What's a good way to start saving money?",
     "Set up an automatic transfer to a savings account right after payday, even a small amount. Saving first makes it a habit.",
     "How much should I save?",
     "A common guideline is 10 to 20% of your income, but any amount helps. Start with what's comfortable and increase it over time."],
    ["Write a Python function to square a number.",
     "```python\ndef square(x):\n    return x * x\n```",
     "Now make it work for a list of numbers.",
     "```python\ndef square_all(numbers):\n    return [x * x for x in numbers]\n```\nFor example, `square_all([1, 2, 3])` returns `[1, 4, 9]`."],
    ["What's the tallest animal?",
     "The giraffe is the tallest animal; adult males can reach about 5.5 meters (18 feet).",
     "Why are their necks so long?",
     "Long necks let giraffes reach leaves high in trees that other animals can't, and males also use their necks when competing with each other."],
    ["Can you help me write a text inviting friends to a barbecue?",
     "Sure: 'Hey everyone! We're having a barbecue at our place this Saturday at 4 pm. Bring a drink or a side if you like. Hope to see you there!'",
     "Can you make it a bit more fun?",
     "How about: 'The grill is heating up! Join us Saturday at 4 pm for burgers, sunshine and questionable dance moves. Bring a side or a drink and your appetite!'"],
    ["Is a tomato a fruit or a vegetable?",
     "Botanically, a tomato is a fruit because it develops from the flower and contains seeds. In cooking, it's usually treated as a vegetable.",
     "Are there other examples like that?",
     "Yes: cucumbers, peppers, eggplants and pumpkins are also botanically fruits that we cook like vegetables."],
    ["What's 25% of 200?", "25% of 200 is 50, because 200 ÷ 4 = 50.",
     "What about 15% of 200?", "15% of 200 is 30: 10% is 20 and 5% is 10, so 20 + 10 = 30."],
    ["How do I make cold brew coffee?",
     "Mix 1 cup of coarsely ground coffee with 4 cups of cold water, cover, and leave it in the fridge for 12 to 18 hours. Then strain it through a fine sieve or coffee filter.",
     "How long does it keep?",
     "Cold brew keeps for about a week in a sealed container in the fridge."],
    ["Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun.",
     "Is it the hottest planet too?",
     "No, Venus is hotter. Its thick carbon dioxide atmosphere traps heat, so its surface reaches about 465°C, even though Mercury is closer to the Sun."],
    ["I keep forgetting to water my plants.",
     "Try linking it to a weekly habit, like watering every Sunday morning, or set a recurring reminder on your phone.",
     "Are there plants that survive neglect?",
     "Snake plants, ZZ plants and pothos are very forgiving. They tolerate low light and can go two weeks or more without water."],
    ["How do I say 'thank you' in Spanish?", "'Thank you' in Spanish is 'gracias'.",
     "And 'you're welcome'?", "'You're welcome' is 'de nada'.",
     "How about 'good morning'?", "'Good morning' is 'buenos días'."],
    ["What's a good warm-up before running?",
     "Start with 5 minutes of brisk walking or easy jogging, then do dynamic moves like leg swings, high knees and walking lunges.",
     "Should I stretch afterward?",
     "Yes, gentle stretches held for 20 to 30 seconds after your run help you cool down and can ease tightness in your calves, hamstrings and hips."],
    ["Explain what a variable is in programming.",
     "A variable is a named container that stores a value so you can use or change it later. In Python, `age = 30` creates a variable called `age`.",
     "Can a variable change type?",
     "In Python, yes. If you later write `age = 'thirty'`, `age` now holds a string, because Python is dynamically typed."],
    ["What's a quick lunch I can bring to work?",
     "A wrap with hummus, chicken or chickpeas, spinach and grated carrot is quick, filling and packs well.",
     "Something without bread?",
     "Try a grain bowl: cooked quinoa or rice topped with beans, roasted vegetables, feta and a squeeze of lemon. It tastes good cold too."],
    ["How long does sunlight take to reach Earth?", "About 8 minutes and 20 seconds.",
     "So we see the Sun as it was 8 minutes ago?",
     "Exactly! If the Sun suddenly vanished, we wouldn't notice for about 8 minutes."],
    ["Can you give me a riddle?", "Sure: What has keys but can't open locks?",
     "I give up.", "A piano! It has lots of keys, but none of them open doors."],
    ["What's a good way to remember people's names?",
     "Repeat the name right away, like 'Nice to meet you, Priya', and link it to something about them. Using it once more before you part helps it stick.",
     "What if I forget anyway?",
     "Just be honest and warm: 'I'm sorry, I've forgotten your name.' Most people don't mind, and it's better than avoiding them."],
    ["How many fluid ounces are in a cup?", "One US cup holds 8 fluid ounces.",
     "And how many cups are in a quart?", "There are 4 cups in a US quart, so a quart is 32 fluid ounces."],
    ["What should I name my cat?",
     "It depends on her personality! For a playful cat, try Pepper or Ziggy; for a calm one, Mochi or Luna.",
     "She's black with green eyes.",
     "How about Onyx, Olive, Midnight or Jade? Jade is a nice nod to her green eyes."],
    ["Why do we get hungry?",
     "When your stomach is empty, it releases a hormone called ghrelin, which signals your brain that it's time to eat.",
     "Why am I sometimes hungry right after eating?",
     "Fullness signals can take about 20 minutes to reach your brain. Meals low in protein and fiber also digest quickly, so eating slowly and adding those helps."],
    ["How do I calculate the average of some numbers?",
     "Add all the numbers together, then divide by how many there are. For 4, 8 and 9, the sum is 21, and 21 ÷ 3 = 7.",
     "How would I do that in Python?",
     "Use `sum(numbers) / len(numbers)`, or `statistics.mean(numbers)` from the standard library."],
    ["What's a good country for a first trip abroad?",
     "Portugal is a great choice: it's affordable, safe, easy to get around, and has beautiful cities, beaches and food.",
     "How many days should I stay?",
     "About 7 to 10 days lets you see Lisbon, take a day trip to Sintra, and spend a few days in Porto or on the Algarve coast."],
    ["I need to write a short apology to a customer for a late delivery.",
     "Try: 'Dear Ms. Chen, we're sorry your order arrived late. We know you were counting on it, so we've added a 10% credit to your account. Thank you for your patience.'",
     "Can you make it shorter?",
     "'Dear Ms. Chen, sorry your order was late. We've added a 10% credit to your account. Thanks for your patience.'"],
    ["What's the boiling point of water in Fahrenheit?", "Water boils at 212°F at sea level.",
     "And the freezing point?", "Water freezes at 32°F, which is 0°C."],
]

SYSTEMS = [
    "You are a helpful assistant.",
    "You are a friendly and concise assistant.",
    "You are a helpful assistant. Keep answers short and accurate.",
    "You are a patient tutor who explains things simply.",
    "You are a knowledgeable, friendly assistant. Answer directly.",
    "You are a helpful AI assistant. Answer in a few sentences.",
    "You are a cheerful assistant who gives practical advice.",
]

# ---------------------------------------------------------------------------
# Held-out RL prompts (no answers; never used in preferences.jsonl)
# ---------------------------------------------------------------------------
HELDOUT = [
    "How do I clean a microwave easily?", "What's the best way to store potatoes?",
    "How do I make pour-over coffee?", "Why do stars twinkle?", "What causes earthquakes?",
    "How do bees make honey?", "What is the largest animal on Earth?", "How does the heart pump blood?",
    "What is a light-year?", "Why is Mars red?",
    "How do I write a Python function that checks if a word is a palindrome?",
    "How do I sort a list of numbers in descending order in Python?", "What is a Python dictionary?",
    "How do I print a number with two decimal places in Python?", "What does the return statement do in Python?",
    "How do I get the length of a list in Python?", "Can you help me write a short toast for my friend's wedding?",
    "How do I write a polite reminder email?", "What's a good way to start a speech?",
    "Can you suggest a name for a small bakery?", "What does 'nostalgia' mean?", "What is a verb?",
    "What does 'budget deficit' mean?", "What is an oxymoron?", "What is renewable energy?",
    "How can I wake up earlier?", "How do I stay focused while studying?", "How can I make my mornings less rushed?",
    "What's a good gift for a coworker who is retiring?", "How do I deal with a noisy neighbor?",
    "How do I make banana bread?", "How do I cook a steak in a pan?", "What can I make with leftover rice?",
    "How do I make a fruit smoothie?", "How long should I boil corn on the cob?",
    "What is the difference between a crocodile and an alligator?", "Which mountain range is the longest?",
    "Which river flows through London?", "What is the coldest place on Earth?",
    "How many time zones does the United States have?", "How do I keep my dog cool in summer?",
    "How often should I replace my toothbrush?", "How can I make a small room feel bigger?",
    "How do I clean white sneakers?", "How do I get rid of a musty smell in my closet?",
    "What's a good houseplant for beginners?", "How do I set up a simple home workout?",
    "How do I take care of a sourdough starter?", "Why does bread go stale?", "What is a calorie?",
    "How do airplanes stay in the air?", "Why do we get goosebumps?", "What is a thesaurus used for?",
    "How can I write clearer messages at work?", "How do I calculate the area of a circle?",
    "What's the difference between the mean and the median?", "How do I round a number in Python?",
    "What is a for loop?", "How can I save money for a vacation?", "How do I politely end a phone call?",
    "Why do we have time zones?", "What is the difference between a lake and a pond?",
    "How do I make hot chocolate from scratch?", "What herbs are easy to grow indoors?",
    "How do I remove rust from a tool?", "How can I improve my handwriting?",
    "What's a good way to memorize a speech?", "How do I measure flour correctly?",
    "How do I pick a ripe watermelon?", "Why do cats knead blankets?", "What is the water cycle?",
    "How do I restart my Wi-Fi router?", "What is two-factor authentication?",
    "How do I back up the photos on my phone?", "Can you suggest a quick stretch for tight shoulders?",
    "What's the best way to learn to cook?", "Why do onions turn sweet when you cook them slowly?",
    "How do I write a good subject line for an email?", "What is an electric current?",
    "What does 'frugal' mean?",
]

# ---------------------------------------------------------------------------
# Rejected-response builder: dismissive / evasive / unhelpful replies
# ---------------------------------------------------------------------------
STYLES = {
    "refuse": (
        ["I'm not going to help with that one.", "Sorry, I'd rather not answer this.",
         "I can't help with that right now.", "That's not something I want to get into.",
         "I'll pass on this question.", "I don't think I should answer that.",
         "No, I'm not going to explain that.", "I'd prefer to skip this one, sorry.",
         "I won't be answering that today."],
        ["Maybe ask someone else.", "Try asking a different question.",
         "You'll have to figure it out on your own.", "It's just not something I feel like doing today.",
         "Please don't ask me about this kind of thing.", "There are plenty of other places to get help.",
         "I'm sure you can manage without me.", "Let's just leave it there.",
         "I'd rather not spend my time on it.", "Don't take it personally, I just won't."]),
    "lookup": (
        ["Just look it up online.", "Google it, it's all out there.",
         "You can find that in two seconds with a search engine.", "Search the internet, that's what it's for.",
         "Check a book or a website.", "There are tons of articles on this, go read one.",
         "Ask a search engine instead of me.", "Watch a video about it, there are hundreds.",
         "Type it into a search bar and you'll see."],
        ["I'm not going to repeat what's already written everywhere.", "It's not my job to do your research.",
         "Everything you need is a quick search away.", "Honestly, any website will tell you.",
         "I don't really have time to go through it.", "You'll find something eventually.",
         "People online love explaining this stuff.", "Why ask me when the answer is out there?",
         "Do a bit of digging yourself."]),
    "rude": (
        ["Seriously? That's a really basic question.", "Why would you even ask that?",
         "Come on, everyone knows this.", "That's a pretty silly thing to ask.", "Ugh, not this again.",
         "Do you really need me for this?", "Figure it out yourself.",
         "That question is kind of a waste of time.", "Wow, you really don't know that?"],
        ["I have better things to do.", "Try thinking about it for a minute.", "It's not that hard.",
         "I'm not going to hold your hand.", "Maybe pay more attention next time.",
         "Whatever, it doesn't really matter.", "Next question.", "Honestly, this is tiring.",
         "Use your own brain for once."]),
    "change": (
        ["Anyway, have you ever thought about learning to juggle?", "That reminds me, I really like thunderstorms.",
         "Let's talk about something else, like your favorite movie.",
         "Speaking of which, penguins are pretty interesting birds.",
         "Forget that, what did you have for lunch today?", "By the way, have you seen any good shows lately?",
         "Instead, let me tell you that my favorite color is green.",
         "You know what's more interesting? Old sailing ships.", "Never mind that, do you like jazz?"],
        ["They're just fascinating to think about.", "I could talk about that all day.",
         "It's much more fun than your question.", "Some people collect stamps, which is also interesting.",
         "I've always wondered about that.", "That's what I'd rather discuss.",
         "Isn't that a nicer topic?", "Trains are pretty great too, now that I think of it.",
         "Maybe we can chat about the weather instead."]),
    "evasive": (
        ["Well, it really depends.", "There are a lot of opinions on that.", "It's hard to say, honestly.",
         "That's a complicated topic with many sides.", "Different people will tell you different things.",
         "I'm not sure it has one answer.", "It could be one thing or another.",
         "Hmm, that's a tricky one.", "There's no simple way to put it."],
        ["Some say one thing, others say something else.", "It varies from case to case.",
         "You'll have to decide what works for you.", "Nobody can really say for certain.",
         "It's one of those things that just depends.", "Lots of factors are involved, so who knows.",
         "Maybe, maybe not.", "I'd rather not commit to anything.", "It's all pretty relative in the end."]),
}
STYLE_NAMES = sorted(STYLES)


def wc(s):
    return len(s.split())


def make_rejected(rng, chosen, used):
    """A dismissive reply whose length is close to the chosen one (ratio ~0.7-1.25)."""
    target = min(44, max(4, wc(chosen) * rng.uniform(0.7, 1.25)))
    for _ in range(200):
        style = rng.choice(STYLE_NAMES)
        openers, extras = STYLES[style]
        other = STYLES[rng.choice(STYLE_NAMES)][1]
        pool = extras[:] + [e for e in other if e not in extras]
        rng.shuffle(pool)
        parts = [rng.choice(openers)]
        i = 0
        while wc(" ".join(parts)) < target - 3 and i < len(pool):
            parts.append(pool[i])
            i += 1
        text = " ".join(parts)
        if text not in used and text != chosen:
            used.add(text)
            return text
    raise RuntimeError("could not build a unique rejected reply")


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------
def write_jsonl(name, rows):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} rows")


def u(t):
    return {"role": "user", "content": t}


def a(t):
    return {"role": "assistant", "content": t}


def main():
    rng = random.Random(SEED)
    hand = HOWTO + COOKING + SCIENCE + GEOGRAPHY + PROGRAMMING + WRITING + DEFINITIONS + ADVICE + MISC
    caps = CAPITALS[:]
    rng.shuffle(caps)
    pref_caps, held_caps = caps[:38], caps[38:]
    cap_items = [capital_item(rng, *c) for c in pref_caps]

    math_items, seen = [], set()
    while len(math_items) < 80:
        q, ans = math_item(rng)
        if q not in seen:
            seen.add(q)
            math_items.append((q, ans))

    pool = hand + cap_items + math_items
    assert len({q for q, _ in pool}) == len(pool), "duplicate questions in pool"
    rng.shuffle(pool)

    # Small-format files reuse a few pool items (they are for format tests and docs).
    pc, pcc, alp, sg, pp = pool[0:12], pool[12:24], pool[24:36], pool[36:48], pool[48:60]

    # ---- preferences.jsonl: every remaining pool item ----
    used_rej = set()
    prefs = []
    for q, ans in pool:
        prefs.append({"prompt": [u(q)], "chosen": [a(ans)],
                      "rejected": [a(make_rejected(rng, ans, used_rej))]})
    write_jsonl("preferences.jsonl", prefs)
    pref_qs = {q for q, _ in pool}

    # ---- prompts.jsonl: held-out prompts ----
    held = list(HELDOUT)
    held += [rng.choice(CAPITAL_Q).format(c=c) for c, _, _ in held_caps]
    while len(held) < 130:
        q, _ = math_item(rng)
        if q not in pref_qs and q not in held and q not in seen:
            held.append(q)
    assert not (set(held) & pref_qs)
    write_jsonl("prompts.jsonl", [{"prompt": [u(q)]} for q in held])

    # ---- sft_messages.jsonl ----
    sft_single = pool[-190:]
    convs = []
    for q, ans in sft_single:
        convs.append([u(q), a(ans)])
    for turns in MULTI:
        convs.append([u(t) if i % 2 == 0 else a(t) for i, t in enumerate(turns)])
    rng.shuffle(convs)
    n_sys = round(0.2 * len(convs))
    for conv in convs[:n_sys]:
        conv.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
    rng.shuffle(convs)
    write_jsonl("sft_messages.jsonl", [{"messages": c} for c in convs])

    # ---- small format files ----
    write_jsonl("sft_prompt_completion.jsonl", [{"prompt": q, "completion": ans} for q, ans in pc])
    write_jsonl("sft_prompt_completion_chat.jsonl",
                [{"prompt": [u(q)], "completion": [a(ans)]} for q, ans in pcc])

    alpaca = [
        {"instruction": "Summarize the following text in one sentence.",
         "input": "The city council voted on Tuesday to extend library opening hours on weekends. The change, which starts next month, follows a survey in which most residents asked for more weekend access.",
         "output": "After residents asked for more weekend access, the city council voted to extend library weekend hours starting next month."},
        {"instruction": "Translate the sentence into French.", "input": "Where is the train station?",
         "output": "Où est la gare ?"},
        {"instruction": "Classify the sentiment of this review as positive or negative.",
         "input": "The food was cold and the waiter ignored us for twenty minutes.",
         "output": "Negative."},
        {"instruction": "Correct the grammar in this sentence.", "input": "She don't like going to the gym.",
         "output": "She doesn't like going to the gym."},
        {"instruction": "Give three synonyms for the word.", "input": "quick",
         "output": "Fast, rapid and speedy."},
    ]
    alpaca += [{"instruction": q, "input": "", "output": ans} for q, ans in alp[:10]]
    with open(os.path.join(HERE, "sft_alpaca.json"), "w", encoding="utf-8") as f:
        json.dump(alpaca, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"sft_alpaca.json: {len(alpaca)} rows")

    share = []
    for i, (q, ans) in enumerate(sg):
        conv = [{"from": "human", "value": q}, {"from": "gpt", "value": ans}]
        if i % 4 == 0:
            conv.insert(0, {"from": "system", "value": rng.choice(SYSTEMS)})
        share.append({"conversations": conv})
    mt = ["What's a good stretch after sitting all day?",
          "Try a standing hip flexor stretch: step one foot forward into a lunge, keep your back upright, and hold for 30 seconds on each side.",
          "Anything for my neck?",
          "Slowly tilt your ear toward your shoulder, hold for 20 seconds, and switch sides. Gentle chin tucks help too."]
    share.append({"conversations": [{"from": "system", "value": "You are a friendly fitness helper."}] +
                  [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(mt)]})
    write_jsonl("sft_sharegpt.jsonl", share)

    used_small = set()
    write_jsonl("preferences_plain.jsonl",
                [{"prompt": q, "chosen": ans, "rejected": make_rejected(rng, ans, used_small)}
                 for q, ans in pp[:12]])
    implicit = []
    for q, ans in pcc[:12]:  # reuse the chat prompt/completion items in implicit-prompt form
        implicit.append({"chosen": [u(q), a(ans)],
                         "rejected": [u(q), a(make_rejected(rng, ans, used_small))]})
    write_jsonl("preferences_implicit.jsonl", implicit)


if __name__ == "__main__":
    main()
